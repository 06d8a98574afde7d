#pragma once
// Differentiable functional SGD (torch.optim.SGD's momentum, dampening, Nesterov,
// weight decay) for libtorch programs: the same (init, update) pair as
// unrollopt.sgd in Python, running the fused operators sgd / sgd_momentum.

#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"
#include "unrollopt/update.h"

namespace unrollopt {

struct SgdOptions {
  Hyperparameter lr = 1e-3;
  // A momentum that is 0 and does not require grad means plain SGD (no buffer).
  Hyperparameter momentum = 0.0;
  Hyperparameter dampening = 0.0;
  Hyperparameter weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct SgdState {
  std::vector<at::Tensor> momentum_buffer;  // one per parameter; empty without momentum
  at::Tensor count;                         // 0-d int64: the number of steps taken
};

class Sgd {
 public:
  // Raises c10::ValueError for a hyperparameter out of range.
  explicit Sgd(SgdOptions options = {});

  SgdState init(at::TensorList params) const;

  // One step, out of place and differentiable: the updates and the new state.
  std::pair<std::vector<at::Tensor>, SgdState> update(at::TensorList grads,
                                                       const SgdState& state,
                                                       at::TensorList params = {}) const;

  const SgdOptions& options() const { return options_; }

 private:
  bool has_momentum() const;
  SgdOptions options_;
};

}  // namespace unrollopt
