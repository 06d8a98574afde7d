#pragma once
// What the C++ functional optimizers (unrollopt/optimizers.h) use.

#include <limits>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"

namespace unrollopt::detail {

// c10::ValueError unless low <= value <= high (value < high with high_open).
void check_range(const char* optimizer, const char* name, double value, double low,
                 double high = std::numeric_limits<double>::infinity(), bool high_open = false);

// One zero tensor like each parameter, per state.
std::vector<std::vector<at::Tensor>> zero_states(size_t num_states, at::TensorList params,
                                                 bool requires_grad);

struct Step {
  std::vector<at::Tensor> updates;
  std::vector<std::vector<at::Tensor>> states;
  at::Tensor count;
};

// A warning (once) where a differentiable step gets grads that do not require
// grad for params that do: the forgotten create_graph=true, which silently
// makes a meta-gradient first-order.
void warn_if_first_order(std::string_view op, at::TensorList grads, at::TensorList params);

// One out-of-place step of the operator unrollopt::<op>.
Step fused_update(std::string_view op, at::TensorList grads,
                  const std::vector<std::vector<at::Tensor>>& states, at::TensorList params,
                  const at::Tensor& count, const std::vector<Hyperparameter>& hyper,
                  const std::vector<double>& options);

}  // namespace unrollopt::detail
