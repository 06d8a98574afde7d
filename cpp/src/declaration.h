#pragma once
// What the functional optimizers (optimizers.cpp) and the torch::optim ones
// (optim.cpp) read from an optimizer's declaration (rules/optimizer.h): the
// operator its settings select, the operator's arguments taken from the
// settings by the rule's names, the checks and the initial values.

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "functional.h"
#include "unrollopt/ops.h"
#include "unrollopt/rules/optimizer.h"

namespace unrollopt::detail {

// Whether a setting is on: a flag true, a number not 0, a hyperparameter present.
template <class O>
bool is_on(const O& o, std::string_view name) {
  for (const auto& f : O::settings(o)) {
    if (name != f.name) continue;
    if (const auto* h = std::get_if<const Hyperparameter*>(&f.value)) return present(**h);
    if (const auto* d = std::get_if<const double*>(&f.value)) return **d != 0;
    return *std::get<const bool*>(f.value);
  }
  // A declaration that names a setting it lacks: a bug here, not the caller's.
  TORCH_CHECK(false, "unrollopt.", O::name, " has no setting ", name);
}

// The rule the settings select: Rule, or the family's name with "_" and each
// variant that is on.
template <class O>
std::string op_of(const O& o) {
  if constexpr (requires { O::variants; }) {
    std::string op = O::family;
    for (const char* v : O::variants) {
      if (is_on(o, v)) op += std::string("_") + v;
    }
    return op;
  } else {
    return O::Rule::name;
  }
}

// An optimizer whose rule keeps a scalar state (rules/rule.h: NAdam's mu_product).
template <class O>
concept HasScalarState = requires { O::Rule::scalar; };

template <class O>
double initial_value(const O& o, std::string_view state) {
  if constexpr (requires { O::initial_states; }) {
    for (const auto& [s, setting] : O::initial_states) {
      if (state != s) continue;
      for (const auto& f : O::settings(o)) {
        if (std::string_view(setting) == f.name) return *std::get<const double*>(f.value);
      }
    }
  }
  return 0.0;
}

// Every number in its range (a hyperparameter on a GPU is not read: that would
// synchronise), then the checks across settings.
template <class O>
void check_options(const O& o) {
  for (const auto& f : O::settings(o)) {
    if (const auto* h = std::get_if<const Hyperparameter*>(&f.value)) {
      if ((*h)->tensor().is_cpu()) check_setting(O::name, f.name, (*h)->value());
    } else if (const auto* d = std::get_if<const double*>(&f.value)) {
      check_setting(O::name, f.name, **d);
    }
  }
  if constexpr (requires { O::requirements; }) {
    for (const auto& r : O::requirements) {
      TORCH_CHECK_VALUE(!is_on(o, r.flag) || is_on(o, r.setting) == r.on, "unrollopt.", O::name,
                        ": ", r.flag, "=true requires ", r.setting, r.on ? " != 0" : " = 0");
    }
  }
}

// The arguments of the operator the options select, from the settings named
// as the rule's hyperparameters and options. The scalar state's place among
// the hyperparameters (scalar_index) is left undefined: the caller's, per step.
struct OperatorArguments {
  static constexpr size_t npos = static_cast<size_t>(-1);
  std::string op;
  const ops::OperatorDescription* description;
  std::vector<at::Tensor> hyper;
  std::vector<double> options;
  size_t scalar_index = npos;
};

template <class O>
OperatorArguments operator_arguments(const O& o) {
  OperatorArguments out{op_of(o), nullptr, {}, {}};
  out.description = &ops::describe(out.op);
  const auto settings = O::settings(o);
  auto find = [&](std::string_view name) -> const auto& {
    for (const auto& f : settings) {
      if (name == f.name) return f.value;
    }
    // A declaration that does not fit its rule: a bug here, not the caller's.
    TORCH_CHECK(false, "unrollopt.", O::name, ": the operator ", out.op, " takes ", name,
                ", which the options lack");
  };
  for (const auto& name : out.description->hyperparameters) {
    if constexpr (HasScalarState<O>) {
      if (name == O::Rule::scalar.name) {
        out.scalar_index = out.hyper.size();
        out.hyper.emplace_back();
        continue;
      }
    }
    const auto* h = std::get_if<const Hyperparameter*>(&find(name));
    TORCH_CHECK(h, "unrollopt.", O::name, ": ", name, " is a hyperparameter of ", out.op);
    out.hyper.push_back((*h)->tensor());
  }
  if constexpr (HasScalarState<O>) {
    TORCH_CHECK(out.scalar_index != OperatorArguments::npos, "unrollopt.", O::name,
                ": the operator ", out.op, " takes no hyperparameter ", O::Rule::scalar.name);
  }
  for (const auto& name : out.description->options) {
    out.options.push_back(std::visit(
        [&](const auto* v) -> double {
          if constexpr (std::is_same_v<std::decay_t<decltype(*v)>, Hyperparameter>) {
            TORCH_CHECK(false, "unrollopt.", O::name, ": ", name, " is an option of ", out.op);
          } else {
            return static_cast<double>(*v);
          }
        },
        find(name)));
  }
  return out;
}

}  // namespace unrollopt::detail
