#pragma once
// Every rule of rules/all.h as a row of a test table: its operator's name and
// argument names, and test values for its hyperparameters and options.

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "testing.h"
#include "unrollopt/rules/all.h"

namespace unrollopt::testing {

struct RuleRow {
  std::string name;  // the operator's
  std::vector<std::string> states, hyperparameters, options, flags;
};
// ctest shows a row by its name (GoogleTest would print its bytes).
inline void PrintTo(const RuleRow& r, std::ostream* os) { *os << r.name; }

// The rules of rules/all.h, in its order: a new rule is tested without being
// listed here.
inline std::vector<RuleRow> every_rule() {
  std::vector<RuleRow> out;
#define UNROLLOPT_TEST_ROW(Rule)                                     \
  out.push_back(                                                     \
      {Rule::name,                                                   \
       {Rule::states.begin(), Rule::states.end()},                   \
       {Rule::hyperparameters.begin(), Rule::hyperparameters.end()}, \
       {Rule::Options::names.begin(), Rule::Options::names.end()},   \
       {Rule::Options::names.end() - Rule::Options::num_flags, Rule::Options::names.end()}});
  UNROLLOPT_FOR_EACH_RULE(UNROLLOPT_TEST_ROW)
#undef UNROLLOPT_TEST_ROW
  return out;
}

inline RuleRow rule_named(const std::string& name) {
  for (auto& r : every_rule()) {
    if (r.name == name) return r;
  }
  ADD_FAILURE() << "no rule named " << name;
  return {};
}

// A test value for each hyperparameter and option, by name (mu_product: nadam's
// mu_1 mu_2 mu_3, about 0.4^3 at beta1 = 0.8); `flags` turns on every boolean
// option (maximize, nesterov, decoupled_weight_decay) and Adam's eps_root;
// without, they are 0.
inline double test_value(const std::string& op, const std::string& name, bool flags = true) {
  static const std::map<std::string, double> values = {
      {"lr", 0.1},
      {"beta1", 0.8},
      {"beta2", 0.9},
      {"beta3", 0.95},
      {"weight_decay", 0.05},
      {"alpha", 0.9},
      {"rho", 0.9},
      {"momentum", 0.7},
      {"dampening", 0.3},
      {"lr_decay", 0.3},
      {"mu_product", 0.064},
      {"eps", 1e-3},
      {"eps_root", 1e-6},
      {"momentum_decay", 4e-3},
      {"maximize", 1},
      {"nesterov", 1},
      {"decoupled_weight_decay", 1},
  };
  const auto it = values.find(name);
  EXPECT_NE(it, values.end()) << op << " takes " << name << ", which has no test value here";
  if (it == values.end()) return 0.0;
  if (name == "eps_root" && !flags) return 0.0;  // Adam's default
  const bool flag = name == "maximize" || name == "nesterov" || name == "decoupled_weight_decay";
  return flag && !flags ? 0.0 : it->second;
}

inline std::vector<double> test_options(const RuleRow& r, bool flags = true) {
  std::vector<double> out;
  for (const auto& o : r.options) out.push_back(test_value(r.name, o, flags));
  return out;
}

// The hyperparameters as float64 0-d tensors; `weight_decay` overrides that one's.
inline TensorVector test_hyper(const RuleRow& r, bool requires_grad = false,
                               std::optional<double> weight_decay = std::nullopt) {
  TensorVector out;
  for (const auto& h : r.hyperparameters) {
    const double v = h == "weight_decay" && weight_decay ? *weight_decay : test_value(r.name, h);
    out.push_back(scalar(v, requires_grad));
  }
  return out;
}

}  // namespace unrollopt::testing
