// The functional optimizers of unrollopt/optimizers.h, one template over the
// optimizers' declarations (rules/optimizer.h): the checks, the operator and
// its arguments, the initial state and the new one all come from the names of
// the settings and the state lists (declaration.h).

#include "unrollopt/optimizers.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include <ATen/ops/add.h>
#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "declaration.h"
#include "functional.h"
#include "unrollopt/ops.h"

namespace unrollopt {
namespace {

// The state lists the operator takes, by its names, in its order.
template <class Options, class State>
std::vector<std::vector<at::Tensor>*> state_lists(State& state,
                                                  const detail::OperatorArguments& a) {
  std::vector<std::vector<at::Tensor>*> out;
  for (const auto& wanted : a.description->states) {
    std::vector<at::Tensor>* found = nullptr;
    state.for_each_list([&](const char* name, std::vector<at::Tensor>& list) {
      if (wanted == name) found = &list;
    });
    TORCH_CHECK(found, "unrollopt.", Options::name, ": the operator ", a.op, " has a state ",
                wanted, ", which the state lacks");
    out.push_back(found);
  }
  return out;
}

}  // namespace

template <class Options>
Optimizer<Options>::Optimizer(Options options) : options_(std::move(options)) {
  detail::check_options(options_);
}

template <class Options>
typename Optimizer<Options>::State Optimizer<Options>::init(at::TensorList params) const {
  State state;
  const auto a = detail::operator_arguments(options_);
  const auto lists = state_lists<Options>(state, a);
  for (size_t k = 0; k < lists.size(); ++k) {
    const double value = detail::initial_value(options_, a.description->states[k]);
    for (const auto& p : params) {
      lists[k]->push_back(at::full_like(p, value).requires_grad_(options_.moment_requires_grad));
    }
  }
  state.count = at::zeros({}, at::kLong);
  if constexpr (detail::HasScalarState<Options>)
    state.*State::scalar_state = at::full({}, Options::Rule::scalar.initial, at::kDouble);
  return state;
}

template <class Options>
std::pair<std::vector<at::Tensor>, typename Optimizer<Options>::State> Optimizer<Options>::update(
    at::TensorList grads, const State& state, at::TensorList params) const {
  auto a = detail::operator_arguments(options_);
  const bool decays = detail::present(options_.weight_decay);
  TORCH_CHECK_VALUE(!params.empty() || !decays, "unrollopt.", Options::name,
                    ".update: weight_decay is not 0, so params are needed");
  State next = state;
  const at::Tensor t = at::add(state.count, 1);
  if constexpr (detail::HasScalarState<Options>) {
    a.hyper[a.scalar_index] = state.*State::scalar_state;
    next.*State::scalar_state = ops::next_scalar(a.op, t, a.hyper, a.options);
    a.hyper[a.scalar_index] = next.*State::scalar_state;
  }
  const auto lists = state_lists<Options>(next, a);  // still the given state's
  std::vector<std::vector<at::Tensor>> states;
  for (const auto* list : lists) states.push_back(*list);
  detail::warn_if_first_order(a.op, grads, params);
  // The operator reads the parameters only for a weight decay.
  auto step = detail::fused_update(a.op, grads, states, decays ? params : at::TensorList(), t,
                                   a.hyper, a.options);
  for (size_t k = 0; k < lists.size(); ++k) *lists[k] = std::move(step.states[k]);
  next.count = std::move(step.count);
  return {std::move(step.updates), std::move(next)};
}

namespace {
template <class Options>
Settings settings_of(const Options& o) {
  Settings out;
  for (const auto& f : Options::settings(o)) {
    std::visit(
        [&](const auto* v) {
          if constexpr (std::is_same_v<std::decay_t<decltype(*v)>, Hyperparameter>) {
            out.emplace_back(f.name, v->value());
          } else {
            out.emplace_back(f.name, static_cast<double>(*v));
          }
        },
        f.value);
  }
  return out;
}
}  // namespace

std::vector<std::pair<std::string, Settings>> default_settings() {
  std::vector<std::pair<std::string, Settings>> out;
#define UNROLLOPT_DEFAULTS(Name) \
  out.emplace_back(Name##Options::name, settings_of(Name##Options{}));
  UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_DEFAULTS)
#undef UNROLLOPT_DEFAULTS
  return out;
}

namespace {
template <class O>
Declaration declaration_of() {
  Declaration d{O::name, {}, {}, {}, {}, {}, {}};
  if constexpr (requires { O::variants; }) {
    d.op = O::family;
    d.variants.assign(O::variants.begin(), O::variants.end());
  } else {
    d.op = O::Rule::name;
  }
  if constexpr (requires { O::requirements; }) {
    for (const auto& r : O::requirements) d.requirements.emplace_back(r.flag, r.setting, r.on);
  }
  if constexpr (requires { O::initial_states; }) {
    for (const auto& [state, setting] : O::initial_states)
      d.initial_states.emplace_back(state, setting);
  }
  if constexpr (detail::HasScalarState<O>) {
    d.scalar_state.emplace(O::Rule::scalar.name, O::Rule::scalar.initial);
  }
  const O defaults{};
  for (const auto& f : O::settings(defaults)) {
    const char* kind = std::holds_alternative<const Hyperparameter*>(f.value) ? "hyperparameter"
                       : std::holds_alternative<const double*>(f.value)       ? "number"
                                                                              : "flag";
    d.setting_kinds.emplace_back(f.name, kind);
  }
  return d;
}
}  // namespace

std::vector<Declaration> declarations() {
  std::vector<Declaration> out;
#define UNROLLOPT_DECLARATION(Name) out.push_back(declaration_of<Name##Options>());
  UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_DECLARATION)
#undef UNROLLOPT_DECLARATION
  return out;
}

namespace detail {
// Derived from the optimizers' settings (the rule is setting_range's).
const std::vector<std::pair<std::string, SettingRange>>& bounded_settings() {
  static const auto all = [] {
    std::vector<std::pair<std::string, SettingRange>> out;
    for (const auto& [optimizer, settings] : default_settings()) {
      for (const auto& [name, value] : settings) {
        const SettingRange r = setting_range(name);
        const bool seen = std::any_of(out.begin(), out.end(),
                                      [&, &name = name](const auto& e) { return e.first == name; });
        if (!seen && (r.low != 0 || !std::isinf(r.high))) out.emplace_back(name, r);
      }
    }
    return out;
  }();
  return all;
}

}  // namespace detail

#define UNROLLOPT_INSTANTIATE(Name) template class Optimizer<Name##Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_INSTANTIATE)
#undef UNROLLOPT_INSTANTIATE

}  // namespace unrollopt
