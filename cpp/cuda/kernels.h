#pragma once
// The fused CUDA kernels of every optimizer rule (kernels.cu; a CUDA build
// only). Inputs are contiguous, checked, and on one CUDA device; the step and
// the hyperparameters are 0-d tensors on that device (read there, so nothing
// synchronises and a step can be captured in a CUDA graph) or on the CPU.

#include <array>

#include <ATen/core/Tensor.h>

#include "../src/tensor_lists.h"

namespace unrollopt::cuda {

template <class Rule>
using StateLists = std::array<at::TensorList, Rule::states.size()>;

// Writes the update and the new states (which may alias the inputs); with
// `add_to_param` the update output receives p + update instead.
template <class Rule>
void forward(const Lists<Rule>& in, at::TensorList update_out, const StateLists<Rule>& states_out,
             bool add_to_param, const at::Tensor& step, at::TensorList hyper,
             const typename Rule::Options& options);

// The vector-Jacobian product of forward. Each defined tensor of `grad_hyper`
// (0-d, on the device) receives the gradient of that hyperparameter.
template <class Rule>
void backward(at::TensorList grad_update, const StateLists<Rule>& grad_states,
              const Lists<Rule>& in, const Lists<Rule>& out, const at::Tensor& step,
              at::TensorList hyper, const typename Rule::Options& options,
              at::TensorList grad_hyper);

}  // namespace unrollopt::cuda
