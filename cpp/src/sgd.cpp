#include "unrollopt/sgd.h"

#include <ATen/ops/zeros.h>

#include "functional.h"

namespace unrollopt {

Sgd::Sgd(SgdOptions options) : options_(std::move(options)) {
  detail::check_range("Sgd", "lr", options_.lr.value(), 0.0);
  detail::check_range("Sgd", "momentum", options_.momentum.value(), 0.0);
  detail::check_range("Sgd", "dampening", options_.dampening.value(), 0.0);
  detail::check_range("Sgd", "weight_decay", options_.weight_decay.value(), 0.0);
  TORCH_CHECK_VALUE(!options_.nesterov || (has_momentum() && options_.dampening.value() == 0),
                    "unrollopt.Sgd: nesterov=true requires a momentum and zero dampening");
}

bool Sgd::has_momentum() const {
  return options_.momentum.tensor().requires_grad() || options_.momentum.value() != 0;
}

SgdState Sgd::init(at::TensorList params) const {
  auto states = detail::zero_states(has_momentum() ? 1 : 0, params, options_.moment_requires_grad);
  return {has_momentum() ? std::move(states[0]) : std::vector<at::Tensor>{},
          at::zeros({}, at::kLong)};
}

std::pair<std::vector<at::Tensor>, SgdState> Sgd::update(at::TensorList grads,
                                                         const SgdState& state,
                                                         at::TensorList params) const {
  TORCH_CHECK_VALUE(!params.empty() || options_.weight_decay.value() == 0,
                    "unrollopt.Sgd.update: weight_decay is not 0, so params are needed");
  const std::vector<double> flags{options_.maximize ? 1.0 : 0.0, options_.nesterov ? 1.0 : 0.0};
  if (!has_momentum()) {
    auto next = detail::fused_update("sgd", grads, {}, params, state.count,
                                     {options_.lr, options_.weight_decay}, flags);
    return {std::move(next.updates), {{}, std::move(next.count)}};
  }
  auto next = detail::fused_update(
      "sgd_momentum", grads, {state.momentum_buffer}, params, state.count,
      {options_.lr, options_.momentum, options_.dampening, options_.weight_decay}, flags);
  return {std::move(next.updates), {std::move(next.states[0]), std::move(next.count)}};
}

}  // namespace unrollopt
