#pragma once
// The operators' typed schemas, made from a rule's names, and the conversion
// between their arguments on the dispatcher's stack and the lists the kernels
// take. For Adam (states mu, nu):
//
//   adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor step,
//        Tensor lr, Tensor beta1, Tensor beta2, Tensor weight_decay,
//        float eps, float eps_root, bool maximize)
//       -> (Tensor[] updates, Tensor[] mu_out, Tensor[] nu_out)
//   adam_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] mu, Tensor(d!)[] nu,
//         Tensor step, Tensor lr, ..., bool maximize, bool update_params) -> ()
//   adam_backward(Tensor?[] grad_updates, Tensor?[] grad_mu_out, Tensor?[] grad_nu_out,
//                 Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor step,
//                 Tensor lr, ..., bool maximize, bool[] output_mask)
//       -> (Tensor[] grad_grads, Tensor[] grad_mu, Tensor[] grad_nu, Tensor[] grad_params,
//           Tensor grad_lr, Tensor grad_beta1, Tensor grad_beta2, Tensor grad_weight_decay)
//
// The backward's output_mask has one entry per output. The kernels (fused/)
// take lists: the state lists one after another in one list, the
// hyperparameters in one, the options as numbers (a flag 0 or 1), and a mask
// of (grads, states, params, each hyperparameter). Their arguments are read
// from the stack by the rule's counts; the operators are called from C++
// (ops.h, the Autograd kernels) through the schema's own description.

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/stack.h>
#include <c10/core/DispatchKeySet.h>

#include "unrollopt/ops.h"

namespace c10 {
class OperatorHandle;
}

namespace unrollopt::fused {

using TensorVector = std::vector<at::Tensor>;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;
using ForwardResult = std::tuple<TensorVector, TensorVector>;
using BackwardResult = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector>;

// The schemas of NAME, NAME_plain, NAME_ and NAME_backward (without the
// namespace); the last `num_flags` options are flags (bool), the others
// numbers (float). With a scalar state (rules/rule.h), also
//   NAME_next_SCALAR(Tensor step, Tensor lr, ..., bool maximize) -> Tensor
std::vector<std::string> schemas(const std::string& name, const ops::OperatorDescription& names,
                                 const char* scalar = nullptr);

// The names of an operator's arguments, read from the schema of any of its
// three operators.
ops::OperatorDescription describe(const c10::FunctionSchema& schema);

// A rule's counts: state lists, hyperparameters, options.
struct Counts {
  size_t states, hyper, options;
};

// --- the stack, in a kernel -------------------------------------------------

struct StepArguments {
  TensorVector grads, states, params;  // states: the state lists one after another
  at::Tensor step;
  TensorVector hyper;
  std::vector<double> options;
};
struct InplaceArguments : StepArguments {
  bool update_params = false;
};
struct BackwardArguments : StepArguments {
  OptionalTensors grad_updates, grad_states;
  c10::List<bool> mask;      // the kernels' (grads, states, params, each hyperparameter)
  std::vector<bool> wanted;  // the operator's, one per output
};

// The arguments on top of the stack (left there), as the kernels take them;
// each names a list whose size differs from the grads' (ValueError).
StepArguments read_forward(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                           Counts counts);
InplaceArguments read_inplace(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                              Counts counts);
BackwardArguments read_backward(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                                Counts counts);
// Whether a tensor among the operator's arguments on top of the stack (in
// lists too) satisfies `predicate`.
bool any_argument(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                  bool (*predicate)(const at::Tensor&));
// NAME_next_SCALAR's arguments on top of the stack (left there).
StepArguments read_scalars(const torch::jit::Stack& stack, Counts counts);
// Removes the operator's arguments from the stack.
void drop_arguments(const c10::OperatorHandle& op, torch::jit::Stack& stack);
// The kernels' results, as the operator returns them.
void push_forward(torch::jit::Stack& stack, ForwardResult result, size_t num_states);
void push_backward(torch::jit::Stack& stack, BackwardResult result, size_t num_states,
                   const std::vector<bool>& wanted);

// --- calls from C++, with the lists -----------------------------------------

ForwardResult call_forward(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                           at::TensorList grads, at::TensorList states, at::TensorList params,
                           const at::Tensor& step, at::TensorList hyper,
                           c10::ArrayRef<double> options);
void call_inplace(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                  at::TensorList params, at::TensorList grads, at::TensorList states,
                  const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options,
                  bool update_params);
// `mask`: (grads, states, params, each hyperparameter), as the kernels'.
BackwardResult call_backward(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                             const OptionalTensors& grad_updates,
                             const OptionalTensors& grad_states, at::TensorList grads,
                             at::TensorList states, at::TensorList params, const at::Tensor& step,
                             at::TensorList hyper, c10::ArrayRef<double> options,
                             const c10::List<bool>& mask);

at::Tensor call_next_scalar(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                            const at::Tensor& step, at::TensorList hyper,
                            c10::ArrayRef<double> options);

// Runs the operator's kernels below Autograd on the same stack (no copies).
void redispatch_below_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                               torch::jit::Stack* stack);

// The boxed kernel of an operator from its kernel over lists.
template <ForwardResult (*Kernel)(at::TensorList, at::TensorList, at::TensorList, const at::Tensor&,
                                  at::TensorList, c10::ArrayRef<double>),
          Counts C>
void boxed_forward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const StepArguments a = read_forward(op, *stack, C);
  drop_arguments(op, *stack);
  push_forward(*stack, Kernel(a.grads, a.states, a.params, a.step, a.hyper, a.options), C.states);
}

template <void (*Kernel)(at::TensorList, at::TensorList, at::TensorList, const at::Tensor&,
                         at::TensorList, c10::ArrayRef<double>, bool),
          Counts C>
void boxed_inplace(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const InplaceArguments a = read_inplace(op, *stack, C);
  drop_arguments(op, *stack);
  Kernel(a.params, a.grads, a.states, a.step, a.hyper, a.options, a.update_params);
}

template <BackwardResult (*Kernel)(const OptionalTensors&, const OptionalTensors&, at::TensorList,
                                   at::TensorList, at::TensorList, const at::Tensor&,
                                   at::TensorList, c10::ArrayRef<double>, const c10::List<bool>&),
          Counts C>
void boxed_backward(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const BackwardArguments a = read_backward(op, *stack, C);
  drop_arguments(op, *stack);
  push_backward(*stack,
                Kernel(a.grad_updates, a.grad_states, a.grads, a.states, a.params, a.step, a.hyper,
                       a.options, a.mask),
                C.states, a.wanted);
}

}  // namespace unrollopt::fused
