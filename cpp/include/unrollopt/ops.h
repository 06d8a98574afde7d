#pragma once
// The fused operators, as registered with PyTorch's dispatcher in the
// `unrollopt` namespace (torch.ops.unrollopt.* in Python). Each optimizer NAME
// ("adam", "adamw", "adam_amsgrad", "adamw_amsgrad", "adamax", "nadam", "radam", "adagrad",
// "adadelta", "rmsprop",
// "rmsprop_centered", "rmsprop_momentum", "rmsprop_centered_momentum", "sgd",
// "sgd_momentum") has three, with CPU, Meta (shapes only, for torch.compile)
// and Autograd kernels; these functions call them through the dispatcher:
//
//   NAME           one step out of place, differentiable with respect to grads,
//                  states, params and hyperparameters (exact hand-written backward)
//   NAME_          the same step in place, not differentiable
//   NAME_backward  its vector-Jacobian product, itself differentiable
//
// Arguments, for n parameters:
//   grads, params      n tensors each (params may be empty when weight_decay is 0)
//   states             the optimizer's state lists one after another:
//                        adam, adamw, adamax, nadam, radam: mu (n tensors), then nu
//                          (n tensors; adamax: the infinity norm)
//                        adam_amsgrad, adamw_amsgrad: mu, nu, nu_max (the running maximum of nu)
//                        adagrad: sum; adadelta: square_avg, acc_delta
//                        rmsprop: square_avg; rmsprop_centered: square_avg, grad_avg;
//                        rmsprop_momentum: square_avg, momentum_buffer;
//                        rmsprop_centered_momentum: square_avg, grad_avg, momentum_buffer
//                        sgd_momentum: momentum_buffer; sgd: none
//   step               0-d tensor: the step number after incrementing (1 on the first)
//   hyperparameters    0-d floating-point tensors (they may require grad):
//                        adam, adamw, adam*_amsgrad, adamax, radam: lr, beta1, beta2, weight_decay
//                        nadam: lr, beta1, beta2, mu_product (the product of the momentum
//                          coefficients mu_1 ... mu_t, this step's included), weight_decay
//                        adagrad: lr, lr_decay, weight_decay
//                        adadelta: lr, rho, weight_decay
//                        rmsprop, rmsprop_centered: lr, alpha, weight_decay
//                        rmsprop_momentum, rmsprop_centered_momentum: lr, alpha, momentum,
//                          weight_decay
//                        sgd: lr, weight_decay
//                        sgd_momentum: lr, momentum, dampening, weight_decay
//   options            adam, adamw, adam*_amsgrad: eps, eps_root, maximize;
//                      adamax, adagrad, adadelta: eps, maximize; rmsprop*: eps, nesterov, maximize;
//                      radam: eps, decoupled_weight_decay, maximize;
//                      nadam: eps, momentum_decay, decoupled_weight_decay, maximize;
//                      sgd, sgd_momentum: maximize, nesterov
//                      (booleans as 0 or 1)
// Hyperparameters are tensors so that they can require grad and change between
// calls without recompiling a traced graph. describe() gives these names at run
// time, from the rules themselves.

#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

namespace unrollopt::ops {

using TensorVector = std::vector<at::Tensor>;

// The names of an operator's arguments, in its order: each state list, each
// hyperparameter, each option (the rule's own lists, cpp/src/rules/).
struct OperatorDescription {
  std::vector<std::string> states, hyperparameters, options;
};

// The description of unrollopt::NAME; c10::ValueError, listing the operators,
// for an unknown name.
const OperatorDescription& describe(std::string_view optimizer);

// The names of every operator, sorted.
std::vector<std::string> operator_names();

// Records an operator's description (called where each rule is registered).
void describe_operator(std::string name, OperatorDescription description);

// unrollopt::NAME: (updates, new states).
std::tuple<TensorVector, TensorVector> fused_step(std::string_view optimizer, at::TensorList grads,
                                                  at::TensorList states, at::TensorList params,
                                                  const at::Tensor& step,
                                                  at::TensorList hyperparameters,
                                                  c10::ArrayRef<double> options);

// unrollopt::NAME_: with `update_params` the parameters receive p + update (an
// optimizer step); otherwise the grads are overwritten by the updates.
void fused_step_(std::string_view optimizer, at::TensorList params, at::TensorList grads,
                 at::TensorList states, const at::Tensor& step, at::TensorList hyperparameters,
                 c10::ArrayRef<double> options, bool update_params);

// unrollopt::NAME_backward: (grad of grads, of states, of params, of each
// hyperparameter). Undefined cotangents count as zeros. `output_mask` selects
// (grads, states, params, hyperparameters...); unselected lists are empty and
// unselected hyperparameter gradients are zeros.
std::tuple<TensorVector, TensorVector, TensorVector, TensorVector> fused_step_backward(
    std::string_view optimizer, const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_states, at::TensorList grads,
    at::TensorList states, at::TensorList params, const at::Tensor& step,
    at::TensorList hyperparameters, c10::ArrayRef<double> options,
    const c10::List<bool>& output_mask);

}  // namespace unrollopt::ops
