#include "unrollopt/adam.h"

#include <ATen/ops/zeros.h>

#include "functional.h"

namespace unrollopt {

Adam::Adam(AdamOptions options) : options_(std::move(options)) {
  detail::check_range("Adam", "lr", options_.lr.value(), 0.0);
  detail::check_range("Adam", "beta1", options_.beta1.value(), 0.0, 1.0, true);
  detail::check_range("Adam", "beta2", options_.beta2.value(), 0.0, 1.0, true);
  detail::check_range("Adam", "eps", options_.eps, 0.0);
  detail::check_range("Adam", "eps_root", options_.eps_root, 0.0);
  detail::check_range("Adam", "weight_decay", options_.weight_decay.value(), 0.0);
}

AdamState Adam::init(at::TensorList params) const {
  auto states = detail::zero_states(2, params, options_.moment_requires_grad);
  return {std::move(states[0]), std::move(states[1]), at::zeros({}, at::kLong)};
}

std::pair<std::vector<at::Tensor>, AdamState> Adam::update(at::TensorList grads,
                                                           const AdamState& state,
                                                           at::TensorList params) const {
  TORCH_CHECK_VALUE(!params.empty() || options_.weight_decay.value() == 0,
                    "unrollopt.Adam.update: weight_decay is not 0, so params are needed");
  auto next = detail::fused_update(
      "adam", grads, {state.mu, state.nu}, params, state.count,
      {options_.lr, options_.beta1, options_.beta2, options_.weight_decay},
      {options_.eps, options_.eps_root, options_.maximize ? 1.0 : 0.0});
  return {std::move(next.updates),
          {std::move(next.states[0]), std::move(next.states[1]), std::move(next.count)}};
}

}  // namespace unrollopt
