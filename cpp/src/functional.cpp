#include "functional.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/add.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "checks.h"
#include "unrollopt/ops.h"
#include "unrollopt/update.h"

namespace unrollopt {

Hyperparameter::Hyperparameter(double value) : tensor_(at::scalar_tensor(value, at::kDouble)) {}

Hyperparameter::Hyperparameter(at::Tensor value) : tensor_(std::move(value)) {
  check_hyperparameter("Hyperparameter", "value", tensor_);
}

double Hyperparameter::value() const { return tensor_.item<double>(); }

std::vector<at::Tensor> apply_updates(at::TensorList params, at::TensorList updates) {
  TORCH_CHECK_VALUE(params.size() == updates.size(), "unrollopt.apply_updates: ", params.size(),
                    " params but ", updates.size(), " updates");
  std::vector<at::Tensor> out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) out.push_back(at::add(params[i], updates[i]));
  return out;
}

namespace detail {

SettingRange setting_range(std::string_view name) {
  // Decay rates: beta1, beta2, ... in [0, 1) (at 1 an average never forgets its
  // start, and bias corrections divide by 0); alpha and rho in [0, 1].
  const auto digits = name.substr(std::min<size_t>(4, name.size()));
  if (name.starts_with("beta") && !digits.empty() &&
      std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return {0, 1, true};
  }
  if (name == "alpha" || name == "rho") return {0, 1};
  return {};
}

void check_setting(std::string_view optimizer, std::string_view name, double value,
                   std::string_view range) {
  const SettingRange r = setting_range(range.empty() ? name : range);
  if (value >= r.low && (r.high_open ? value < r.high : value <= r.high)) return;
  const std::string prefix = optimizer.empty() ? "" : "unrollopt." + std::string(optimizer) + ": ";
  const std::string upper =
      std::isinf(r.high) ? "" : c10::str(r.high_open ? " < " : " <= ", r.high);
  TORCH_CHECK_VALUE(false, prefix, "Invalid ", name, ": ", value, " (expected ", r.low,
                    " <= ", name, upper, ")");
}

std::vector<std::vector<at::Tensor>> zero_states(size_t num_states, at::TensorList params,
                                                 bool requires_grad) {
  std::vector<std::vector<at::Tensor>> states(num_states);
  for (auto& state : states) {
    for (const auto& p : params) state.push_back(at::zeros_like(p).requires_grad_(requires_grad));
  }
  return states;
}

namespace {
bool any_requires_grad(at::TensorList list) {
  return std::any_of(list.begin(), list.end(),
                     [](const at::Tensor& t) { return t.requires_grad(); });
}
}  // namespace

void warn_if_first_order(std::string_view op, at::TensorList grads, at::TensorList params) {
  if (params.empty() || !at::GradMode::is_enabled() || any_requires_grad(grads) ||
      !any_requires_grad(params)) {
    return;
  }
  TORCH_WARN_ONCE(
      "unrollopt ", op,
      " update: the grads do not require grad but the params do, so the step is "
      "first-order (its gradient does not flow through the grads). In an unrolled "
      "inner loop compute them with torch::autograd::grad(..., /*create_graph=*/true).");
}

Step fused_update(std::string_view op, at::TensorList grads,
                  const std::vector<std::vector<at::Tensor>>& states, at::TensorList params,
                  const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options) {
  std::vector<at::Tensor> flat;
  for (const auto& state : states) flat.insert(flat.end(), state.begin(), state.end());
  Step next;
  next.count = step;
  auto [updates, new_flat] = ops::fused_step(op, grads, flat, params, step, hyper, options);
  next.updates = std::move(updates);
  const auto n = static_cast<std::ptrdiff_t>(grads.size());
  for (size_t k = 0; k < states.size(); ++k) {
    next.states.emplace_back(new_flat.begin() + k * n, new_flat.begin() + (k + 1) * n);
  }
  return next;
}

}  // namespace detail
}  // namespace unrollopt
