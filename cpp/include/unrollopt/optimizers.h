#pragma once
// Differentiable functional optimizers for libtorch programs: the (init, update)
// pairs of unrollopt.adam, unrollopt.rmsprop, ... in Python, with the same
// options and defaults, running the fused operators.
//
//   unrollopt::RMSprop rmsprop({.lr = 1e-2, .momentum = 0.9, .centered = true});
//   auto state = rmsprop.init(params);
//   for (...) {
//     auto grads = torch::autograd::grad({loss}, params, {}, true, /*create_graph=*/true);
//     auto [updates, next] = rmsprop.update(grads, state, params);
//     params = unrollopt::apply_updates(params, updates);
//     state = std::move(next);
//   }
//
// update() is out of place and differentiable with respect to the grads, the
// state, the params (through a weight decay) and every Hyperparameter given as a
// tensor that requires grad.
//
// Each optimizer is an Options struct and a State struct, declared next to
// the rules it runs, with its update equations: unrollopt/rules/adam.h has
// unrollopt::AdamOptions and AdamState, and so on; every Options has
// `maximize` and `moment_requires_grad` (whether init() makes the states
// require grad, to differentiate with respect to them). The class is the one
// template Optimizer<Options>, which derives its behaviour from the settings'
// names (unrollopt/rules/optimizer.h).

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"
#include "unrollopt/rules/all.h"
#include "unrollopt/update.h"

namespace unrollopt {

template <class OptionsT>
class Optimizer {
 public:
  using Options = OptionsT;
  using State = typename Options::State;

  // Raises c10::ValueError, naming it, for a setting out of range.
  explicit Optimizer(Options options = {});

  // The initial state for these parameters.
  State init(at::TensorList params) const;

  // One step, out of place: the updates (to add to the parameters) and the new
  // state. `params` may be empty when the weight decay is 0.
  std::pair<std::vector<at::Tensor>, State> update(at::TensorList grads, const State& state,
                                                   at::TensorList params = {}) const;

  const Options& options() const { return options_; }

 private:
  Options options_;
};

// unrollopt::Adam, unrollopt::Adan, ...: every optimizer of rules/all.h.
#define UNROLLOPT_NAME_OPTIMIZER(Name) using Name = Optimizer<Name##Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_NAME_OPTIMIZER)
#undef UNROLLOPT_NAME_OPTIMIZER

// Every optimizer's settings at their defaults, by name: {"Adam", {{"lr", 1e-3},
// {"beta1", 0.9}, ...}}, ... (numbers as they are, flags as 0 or 1).
using Settings = std::vector<std::pair<std::string, double>>;
std::vector<std::pair<std::string, Settings>> default_settings();

// Every optimizer's choices as data, as its declaration states them (for other
// languages' bindings, which apply them to their own settings): the rule, or
// the family of rules and the settings that select a variant
// (family + "_" + each that is on); the requirements across settings
// (flag, setting, whether it must be on); the states that start at a setting;
// the rule's scalar state (name, initial value), if it keeps one (at most one);
// each setting's kind: "hyperparameter" (a tensor or number), "number" or "flag".
struct Declaration {
  std::string name, op;
  std::vector<std::string> variants;
  std::vector<std::tuple<std::string, std::string, bool>> requirements;
  std::vector<std::pair<std::string, std::string>> initial_states;
  std::optional<std::pair<std::string, double>> scalar_state;
  std::vector<std::pair<std::string, std::string>> setting_kinds;
};
std::vector<Declaration> declarations();

}  // namespace unrollopt
