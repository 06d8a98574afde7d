#pragma once
// What the C++ functional optimizers (unrollopt/optimizers.h) use.

#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"

namespace unrollopt::detail {

// An optimizer's setting (a hyperparameter or a numeric option) within its
// range, by name: beta1, beta2, ... in [0, 1), alpha and rho in [0, 1], every
// other in [0, inf]. The one check of the C++ and the Python optimizers (through
// _C.check_setting), so both say the same: c10::ValueError "Invalid NAME: VALUE
// (expected 0 <= NAME[ < 1])", after "unrollopt.OPTIMIZER: " where `optimizer` is
// given. `range` names the setting whose range applies (default: `name`; e.g.
// "beta1" for Python's "betas[0]").
void check_setting(std::string_view optimizer, std::string_view name, double value,
                   std::string_view range = {});

struct SettingRange {
  double low = 0, high = std::numeric_limits<double>::infinity();
  bool high_open = false;
};
// The settings of the optimizers whose range is not [0, inf], by name.
const std::vector<std::pair<std::string, SettingRange>>& bounded_settings();
SettingRange setting_range(std::string_view name);

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

// One out-of-place step of the operator unrollopt::<op>, the step number `step`
// (the count after it).
Step fused_update(std::string_view op, at::TensorList grads,
                  const std::vector<std::vector<at::Tensor>>& states, at::TensorList params,
                  const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options);

}  // namespace unrollopt::detail
