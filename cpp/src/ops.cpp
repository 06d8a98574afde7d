// The C++ entry points of the operators: typed calls through the dispatcher, so
// that C++ callers get the same Autograd, CPU, CUDA and Meta kernels as Python.

#include "unrollopt/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace unrollopt::ops {
namespace {
template <class Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
}  // namespace

std::tuple<TensorVector, TensorVector, TensorVector> adam(
    at::TensorList grads, at::TensorList mus, at::TensorList nus, at::TensorList params,
    const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
    const at::Tensor& beta2, const at::Tensor& weight_decay, double eps, double eps_root,
    bool maximize) {
  static const auto handle = op<decltype(adam)>("unrollopt::adam");
  return handle.call(grads, mus, nus, params, step, lr, beta1, beta2, weight_decay, eps,
                     eps_root, maximize);
}

void adam_(at::TensorList params, at::TensorList grads, at::TensorList mus, at::TensorList nus,
           const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
           const at::Tensor& beta2, const at::Tensor& weight_decay, double eps,
           double eps_root, bool maximize, bool update_params) {
  static const auto handle = op<decltype(adam_)>("unrollopt::adam_");
  handle.call(params, grads, mus, nus, step, lr, beta1, beta2, weight_decay, eps, eps_root,
              maximize, update_params);
}

AdamBackwardResult adam_backward(
    const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_mus,
    const c10::List<std::optional<at::Tensor>>& grad_nus, at::TensorList grads,
    at::TensorList mus, at::TensorList nus, at::TensorList params, const at::Tensor& step,
    const at::Tensor& lr, const at::Tensor& beta1, const at::Tensor& beta2,
    const at::Tensor& weight_decay, double eps, double eps_root, bool maximize,
    std::array<bool, 8> output_mask) {
  static const auto handle = op<decltype(adam_backward)>("unrollopt::adam_backward");
  return handle.call(grad_updates, grad_mus, grad_nus, grads, mus, nus, params, step, lr,
                     beta1, beta2, weight_decay, eps, eps_root, maximize, output_mask);
}

}  // namespace unrollopt::ops
