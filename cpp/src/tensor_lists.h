#pragma once
// The tensor lists a fused kernel (CPU or CUDA) works on.

#include <array>

#include <ATen/core/Tensor.h>

namespace unrollopt {

// One list per argument, one tensor per parameter. `params` may be empty (read
// as zeros); so may an output list (not written) or a cotangent (zeros).
template <class Rule>
struct Lists {
  static constexpr size_t num_states = Rule::states.size();
  at::TensorList grads;
  std::array<at::TensorList, num_states> states;
  at::TensorList params;
};

}  // namespace unrollopt
