#pragma once
// Differentiable functional Adam for libtorch programs: the same (init, update)
// pair as unrollopt.adam in Python, running the fused operator.
//
//   unrollopt::Adam adam({.lr = 1e-2});
//   auto state = adam.init(params);
//   for (...) {
//     auto grads = torch::autograd::grad({loss}, params, {}, true, /*create_graph=*/true);
//     std::tie(updates, state) = adam.update(grads, state, params);
//     params = unrollopt::apply_updates(params, updates);
//   }
//
// The update equations are in cpp/src/rules/adam.h (the rule every kernel runs) and in the Python
// docstring of unrollopt.adam.

#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"
#include "unrollopt/update.h"

namespace unrollopt {

struct AdamOptions {
  Hyperparameter lr = 1e-3;
  Hyperparameter beta1 = 0.9;
  Hyperparameter beta2 = 0.999;
  double eps = 1e-8;
  double eps_root = 0.0;
  Hyperparameter weight_decay = 0.0;
  bool maximize = false;
  // Whether init() makes the moments require grad (to differentiate with respect
  // to the initial state).
  bool moment_requires_grad = false;
};

struct AdamState {
  std::vector<at::Tensor> mu, nu;  // first and second moments, one per parameter
  at::Tensor count;                // 0-d int64: the number of steps taken
};

class Adam {
 public:
  // Raises c10::ValueError for a hyperparameter out of range.
  explicit Adam(AdamOptions options = {});

  AdamState init(at::TensorList params) const;

  // One step, out of place: returns the updates (to add to the parameters) and
  // the new state. Differentiable with respect to grads, the state, params
  // (through weight decay) and tensor hyperparameters. `params` may be empty
  // when weight_decay is 0.
  std::pair<std::vector<at::Tensor>, AdamState> update(at::TensorList grads,
                                                        const AdamState& state,
                                                        at::TensorList params = {}) const;

  const AdamOptions& options() const { return options_; }

 private:
  AdamOptions options_;
};

}  // namespace unrollopt
