#pragma once
// The fused operators, as registered with PyTorch's dispatcher in the
// `unrollopt` namespace (torch.ops.unrollopt.* in Python). Each has a CPU kernel,
// a Meta kernel (shapes only, for torch.compile) and an Autograd kernel; these
// functions call them through the dispatcher.
//
// Hyperparameters are 0-d floating-point tensors so that they can require grad
// and change between calls without recompiling a traced graph. `step` is the
// step number after incrementing (1 on the first step). `params` may be empty
// when weight_decay is 0.

#include <array>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

namespace unrollopt::ops {

using TensorVector = std::vector<at::Tensor>;

// unrollopt::adam: (updates, new mus, new nus) of one Adam step, out of place and
// differentiable with respect to every tensor argument but `step`.
std::tuple<TensorVector, TensorVector, TensorVector> adam(
    at::TensorList grads, at::TensorList mus, at::TensorList nus, at::TensorList params,
    const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
    const at::Tensor& beta2, const at::Tensor& weight_decay, double eps, double eps_root,
    bool maximize);

// unrollopt::adam_: the same step in place, not differentiable. With
// `update_params` the parameters receive p + update (an optimizer step);
// otherwise the grads are overwritten by the updates and params are only read.
void adam_(at::TensorList params, at::TensorList grads, at::TensorList mus, at::TensorList nus,
           const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
           const at::Tensor& beta2, const at::Tensor& weight_decay, double eps,
           double eps_root, bool maximize, bool update_params);

// unrollopt::adam_backward: the exact vector-Jacobian product of unrollopt::adam,
// itself differentiable. Undefined cotangents count as zeros. `output_mask`
// selects (grads, mus, nus, params, lr, beta1, beta2, weight_decay); unselected
// list outputs are empty and unselected hyperparameter gradients are zeros.
using AdamBackwardResult = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
AdamBackwardResult adam_backward(
    const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_mus,
    const c10::List<std::optional<at::Tensor>>& grad_nus, at::TensorList grads,
    at::TensorList mus, at::TensorList nus, at::TensorList params, const at::Tensor& step,
    const at::Tensor& lr, const at::Tensor& beta1, const at::Tensor& beta2,
    const at::Tensor& weight_decay, double eps, double eps_root, bool maximize,
    std::array<bool, 8> output_mask);

}  // namespace unrollopt::ops
