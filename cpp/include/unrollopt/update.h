#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace unrollopt {

// params[i] + updates[i], out of place (differentiable).
std::vector<at::Tensor> apply_updates(at::TensorList params, at::TensorList updates);

}  // namespace unrollopt
