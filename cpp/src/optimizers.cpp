// The functional optimizers of unrollopt/optimizers.h, from one template over
// the Specs (optimizer_spec.h): the checks (one table of ranges), the
// operator's arguments in its order (ops::describe, the rule's own lists), the
// initial state and the new one all come from the fields' names.

#include "unrollopt/optimizers.h"

#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include <ATen/ops/full_like.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include "functional.h"
#include "optimizer_spec.h"
#include "unrollopt/ops.h"

namespace unrollopt {
namespace {

using detail::present;
using detail::Spec;

// The state lists the operator `op` takes, by its names, in its order.
template <class Options, class State>
std::vector<std::vector<at::Tensor>*> state_lists(State& state, const std::string& op) {
  std::vector<std::vector<at::Tensor>*> out;
  for (const auto& wanted : ops::describe(op).states) {
    std::vector<at::Tensor>* found = nullptr;
    Spec<Options>::states(state, [&](const char* name, std::vector<at::Tensor>& list) {
      if (wanted == name) found = &list;
    });
    TORCH_CHECK(found, "unrollopt.", Spec<Options>::name, ": the operator ", op, " has a state ",
                wanted, ", which the state lacks");
    out.push_back(found);
  }
  return out;
}

}  // namespace

template <class Options>
Optimizer<Options>::Optimizer(Options options) : options_(std::move(options)) {
  using S = Spec<Options>;
  for (const auto& f : S::fields(std::as_const(options_))) {
    double value;
    if (const auto* h = std::get_if<const Hyperparameter*>(&f.value)) {
      if (!(*h)->tensor().is_cpu()) continue;  // reading it would synchronise
      value = (*h)->value();
    } else if (const auto* d = std::get_if<const double*>(&f.value)) {
      value = **d;
    } else {
      continue;  // a flag
    }
    detail::check_setting(S::name, f.name, value);
  }
  if constexpr (detail::HasCheck<S, Options>) S::check(options_);
}

template <class Options>
typename Optimizer<Options>::State Optimizer<Options>::init(at::TensorList params) const {
  using S = Spec<Options>;
  State state;
  const std::string op = S::op(options_);
  const auto& names = ops::describe(op).states;
  const auto lists = state_lists<Options>(state, op);
  for (size_t k = 0; k < lists.size(); ++k) {
    double value = 0.0;
    if constexpr (detail::HasInitial<S, Options>) value = S::initial(options_, names[k]);
    for (const auto& p : params) {
      lists[k]->push_back(at::full_like(p, value).requires_grad_(options_.moment_requires_grad));
    }
  }
  state.count = at::zeros({}, at::kLong);
  if constexpr (detail::is_nadam<Options>) state.mu_product = at::ones({}, at::kDouble);
  return state;
}

template <class Options>
std::pair<std::vector<at::Tensor>, typename Optimizer<Options>::State> Optimizer<Options>::update(
    at::TensorList grads, const State& state, at::TensorList params) const {
  using S = Spec<Options>;
  const std::string op = S::op(options_);
  const auto& description = ops::describe(op);
  const auto fields = S::fields(options_);
  const bool decays = present(options_.weight_decay);
  TORCH_CHECK_VALUE(!params.empty() || !decays, "unrollopt.", S::name,
                    ".update: weight_decay is not 0, so params are needed");
  State next = state;
  std::vector<Hyperparameter> hyper;
  for (const auto& name : description.hyperparameters) {
    if constexpr (detail::is_nadam<Options>) {
      if (name == "mu_product") {
        TORCH_CHECK_VALUE(state.count.defined() && state.count.is_cpu(),
                          "unrollopt.NAdam.update: "
                          "state.count must be a CPU tensor (from init)");
        next.mu_product =
            detail::nadam_product(options_, state.mu_product,
                                  static_cast<double>(state.count.template item<int64_t>() + 1));
        hyper.emplace_back(next.mu_product);
        continue;
      }
    }
    hyper.push_back(
        *std::get<const Hyperparameter*>(detail::find_field(fields, name, S::name, op).value));
  }
  std::vector<double> flags;
  for (const auto& name : description.options) {
    flags.push_back(detail::option_value(fields, name, S::name, op));
  }
  const auto lists = state_lists<Options>(next, op);  // still the given state's
  std::vector<std::vector<at::Tensor>> states;
  for (const auto* list : lists) states.push_back(*list);
  detail::warn_if_first_order(op, grads, params);
  // The operator reads the parameters only for a weight decay.
  auto step = detail::fused_update(op, grads, states, decays ? params : at::TensorList(),
                                   state.count, hyper, flags);
  for (size_t k = 0; k < lists.size(); ++k) *lists[k] = std::move(step.states[k]);
  next.count = std::move(step.count);
  return {std::move(step.updates), std::move(next)};
}

namespace {
template <class Options>
Settings settings_of(const Options& o) {
  Settings out;
  for (const auto& f : Spec<Options>::fields(o)) {
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
  out.emplace_back("moment_requires_grad", o.moment_requires_grad);
  return out;
}
}  // namespace

std::vector<std::pair<std::string, Settings>> default_settings() {
  std::vector<std::pair<std::string, Settings>> out;
#define UNROLLOPT_DEFAULTS(Name, Options) \
  out.emplace_back(Spec<Options>::name, settings_of(Options{}));
  UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_DEFAULTS)
#undef UNROLLOPT_DEFAULTS
  return out;
}

#define UNROLLOPT_INSTANTIATE(Name, Options) template class Optimizer<Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_INSTANTIATE)
#undef UNROLLOPT_INSTANTIATE

}  // namespace unrollopt
