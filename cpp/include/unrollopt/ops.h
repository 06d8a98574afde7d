#pragma once
// The fused operators, as registered with PyTorch's dispatcher in the
// `unrollopt` namespace (torch.ops.unrollopt.* in Python). Each optimizer rule
// NAME (operator_names(): "adam", "adamw_amsgrad", "lion", "sgd_momentum", ...;
// the rules are cpp/include/unrollopt/rules/) has three fused operators, with
// CPU, Meta (shapes only, for torch.compile) and Autograd kernels:
//
//   NAME           one step out of place, differentiable with respect to grads,
//                  states, params and hyperparameters (exact hand-written backward)
//   NAME_          the same step in place, not differentiable
//   NAME_backward  its vector-Jacobian product, itself differentiable
//
// and NAME_plain, the same step as NAME in ATen operations (the rule on
// tensors), which autograd differentiates like any libtorch code: the plain
// path (Python's use_accelerated_op=False), on any device. A rule with a
// scalar state S (NAdam's mu_product) has NAME_next_S (next_scalar below).
//
// Each has a typed schema with the rule's names, e.g.
//   adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, Tensor step,
//        Tensor lr, Tensor beta1, Tensor beta2, Tensor weight_decay,
//        float eps, float eps_root, bool maximize)
//       -> (Tensor[] updates, Tensor[] mu_out, Tensor[] nu_out)
// (all in src/fused/schema.h). The functions below call them through the
// dispatcher with the arguments in lists, the same for every rule:
//   grads, params      n tensors each (params may be empty when weight_decay is 0)
//   states             the state lists one after another (n tensors each), in
//                      the order of describe(NAME).states
//   step               0-d tensor: the step number after incrementing (1 on the first)
//   hyperparameters    0-d floating-point tensors (they may require grad), in the
//                      order of describe(NAME).hyperparameters
//   options            numbers and flags (0 or 1), in the order of describe(NAME).options
//
// describe(NAME) reads these names from the schema, e.g. adam: states mu, nu;
// hyperparameters lr, beta1, beta2, weight_decay; options eps, eps_root,
// maximize (a flag). Hyperparameters are tensors so that they can require grad
// and change between calls without recompiling a traced graph.

#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

namespace unrollopt::ops {

using TensorVector = std::vector<at::Tensor>;

// The names of an operator's arguments, in its order: each state list, each
// hyperparameter, each option (the rule's own lists, cpp/include/unrollopt/rules/),
// and which options are flags (bool in the schema; the others are float).
struct OperatorDescription {
  std::vector<std::string> states, hyperparameters, options, flags;
};

// The description of unrollopt::NAME, from its schema; c10::ValueError, listing
// the operators, for an unknown name.
const OperatorDescription& describe(std::string_view optimizer);

// The names of every operator (NAME, without NAME_ and NAME_backward), sorted.
std::vector<std::string> operator_names();

// unrollopt::NAME: (updates, new states).
std::tuple<TensorVector, TensorVector> fused_step(std::string_view optimizer, at::TensorList grads,
                                                  at::TensorList states, at::TensorList params,
                                                  const at::Tensor& step,
                                                  at::TensorList hyperparameters,
                                                  c10::ArrayRef<double> options);

// unrollopt::NAME_plain: (updates, new states), as fused_step.
std::tuple<TensorVector, TensorVector> plain_step(std::string_view optimizer, at::TensorList grads,
                                                  at::TensorList states, at::TensorList params,
                                                  const at::Tensor& step,
                                                  at::TensorList hyperparameters,
                                                  c10::ArrayRef<double> options);

// unrollopt::NAME_: with `update_params` the parameters receive p + update (an
// optimizer step); otherwise the grads are overwritten by the updates.
// The value after step `step` of the scalar state of the optimizer's rule
// (rules/rule.h: NAdam's mu_product, which the caller keeps), from the
// hyperparameters with the previous value in its place; in that value's dtype,
// differentiable (the operator NAME_next_S, in ATen operations).
at::Tensor next_scalar(std::string_view optimizer, const at::Tensor& step,
                       at::TensorList hyperparameters, c10::ArrayRef<double> options);

void fused_step_(std::string_view optimizer, at::TensorList params, at::TensorList grads,
                 at::TensorList states, const at::Tensor& step, at::TensorList hyperparameters,
                 c10::ArrayRef<double> options, bool update_params);

// unrollopt::NAME_backward: (grad of grads, of states, of params, of each
// hyperparameter). Undefined cotangents count as zeros. `output_mask` selects
// (grads, states, params, each hyperparameter): 3 + NH values, where the
// operator's own output_mask has one per output; unselected lists are empty
// and unselected hyperparameter gradients are zeros.
std::tuple<TensorVector, TensorVector, TensorVector, TensorVector> fused_step_backward(
    std::string_view optimizer, const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_states, at::TensorList grads,
    at::TensorList states, at::TensorList params, const at::Tensor& step,
    at::TensorList hyperparameters, c10::ArrayRef<double> options,
    const c10::List<bool>& output_mask);

}  // namespace unrollopt::ops
