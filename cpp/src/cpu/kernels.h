#pragma once
// The fused CPU kernels. Each kernel source is compiled once per CPU capability
// (DEFAULT, AVX2) into its own namespace; `kernels()` picks the best one the
// running CPU supports. Inputs are contiguous and already validated.

#include <ATen/core/Tensor.h>

namespace unrollopt::cpu {

// Adam's hyperparameters for one step, read from their tensors; step counts from 1.
struct AdamScalars {
  double lr, beta1, beta2, weight_decay, step, eps, eps_root;
  bool maximize;
};

// One list per argument, one tensor per parameter; `params` may be empty (read as 0).
struct AdamInputs {
  at::TensorList grads, mus, nus, params;
};

// Writes (update, mu', nu') into the outputs, which may alias the inputs; with
// `add_to_param` the first output receives p + update instead of update.
using AdamForward = void (*)(const AdamInputs& in, at::TensorList update_out,
                             at::TensorList mu_out, at::TensorList nu_out, bool add_to_param,
                             const AdamScalars& hp);

// The vector-Jacobian product of AdamForward. Undefined cotangents read as 0; an
// empty output list is not computed. With `hyper_grad` non-null it receives the
// gradients with respect to (lr, beta1, beta2, weight_decay).
using AdamBackward = void (*)(at::TensorList grad_update, at::TensorList grad_mu,
                              at::TensorList grad_nu, const AdamInputs& in,
                              at::TensorList grad_grads_out, at::TensorList grad_mus_out,
                              at::TensorList grad_nus_out, at::TensorList grad_params_out,
                              const AdamScalars& hp, double* hyper_grad);

struct Kernels {
  const char* capability;
  AdamForward adam_forward;
  AdamBackward adam_backward;
};

// The kernels for this CPU: AVX2 where supported, unless the environment variable
// UNROLLOPT_CPU_CAPABILITY=default asks for the portable ones.
const Kernels& kernels();

namespace DEFAULT {
extern const Kernels kernels;
}
namespace AVX2 {
extern const Kernels kernels;
}

}  // namespace unrollopt::cpu
