#include "unrollopt/adam.h"

#include <ATen/ops/add.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include "checks.h"
#include "unrollopt/ops.h"

namespace unrollopt {

Hyperparameter::Hyperparameter(double value) : tensor_(at::scalar_tensor(value, at::kDouble)) {}

Hyperparameter::Hyperparameter(at::Tensor value) : tensor_(std::move(value)) {
  check_hyperparameter("Hyperparameter", "value", tensor_);
}

double Hyperparameter::value() const { return tensor_.item<double>(); }

namespace {
void check_range(const char* name, double value, double low, double high, bool high_open) {
  TORCH_CHECK_VALUE(value >= low && (high_open ? value < high : value <= high),
                    "unrollopt.Adam: invalid ", name, " ", value, "; expected a value in [",
                    low, ", ", high, high_open ? ")" : "]");
}
}  // namespace

Adam::Adam(AdamOptions options) : options_(std::move(options)) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  check_range("lr", options_.lr.value(), 0.0, inf, false);
  check_range("beta1", options_.beta1.value(), 0.0, 1.0, true);
  check_range("beta2", options_.beta2.value(), 0.0, 1.0, true);
  check_range("eps", options_.eps, 0.0, inf, false);
  check_range("eps_root", options_.eps_root, 0.0, inf, false);
  check_range("weight_decay", options_.weight_decay.value(), 0.0, inf, false);
}

AdamState Adam::init(at::TensorList params) const {
  AdamState state;
  for (const auto& p : params) {
    state.mu.push_back(at::zeros_like(p).requires_grad_(options_.moment_requires_grad));
    state.nu.push_back(at::zeros_like(p).requires_grad_(options_.moment_requires_grad));
  }
  state.count = at::zeros({}, at::TensorOptions().dtype(at::kLong));
  return state;
}

std::pair<std::vector<at::Tensor>, AdamState> Adam::update(at::TensorList grads,
                                                           const AdamState& state,
                                                           at::TensorList params) const {
  TORCH_CHECK_VALUE(!params.empty() || options_.weight_decay.value() == 0,
                    "unrollopt.Adam.update: weight_decay is not 0, so params are needed");
  AdamState next;
  next.count = at::add(state.count, 1);
  auto [updates, mu, nu] =
      ops::adam(grads, state.mu, state.nu, params, next.count, options_.lr.tensor(),
                options_.beta1.tensor(), options_.beta2.tensor(),
                options_.weight_decay.tensor(), options_.eps, options_.eps_root,
                options_.maximize);
  next.mu = std::move(mu);
  next.nu = std::move(nu);
  return {std::move(updates), std::move(next)};
}

std::vector<at::Tensor> apply_updates(at::TensorList params, at::TensorList updates) {
  TORCH_CHECK_VALUE(params.size() == updates.size(), "unrollopt.apply_updates: ",
                    params.size(), " params but ", updates.size(), " updates");
  std::vector<at::Tensor> out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) out.push_back(at::add(params[i], updates[i]));
  return out;
}

}  // namespace unrollopt
