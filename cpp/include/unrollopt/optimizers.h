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
// tensor that requires grad. The update equations are in cpp/src/rules/ (the
// rules every kernel runs) and in the docstrings of the Python aliases.
//
// Each optimizer is an Options struct and a State struct; the class is the one
// template Optimizer<Options>, whose behaviour cpp/src/optimizers.cpp derives
// from the options' names (they select the operator and order its arguments).

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"
#include "unrollopt/update.h"

namespace unrollopt {

// Adam (decoupled = false) and AdamW (true): unrollopt.adam / unrollopt.adamw.
template <bool Decoupled>
struct AdamFamilyOptions {
  Hyperparameter lr = 1e-3;
  Hyperparameter beta1 = 0.9;
  Hyperparameter beta2 = 0.999;
  double eps = 1e-8;
  double eps_root = 0.0;
  Hyperparameter weight_decay = Decoupled ? 1e-2 : 0.0;
  bool amsgrad = false;
  bool maximize = false;
  // Whether init() makes the moments require grad (to differentiate with
  // respect to the initial state).
  bool moment_requires_grad = false;
};
using AdamOptions = AdamFamilyOptions<false>;
using AdamWOptions = AdamFamilyOptions<true>;

// Adam, AdamW, Adamax and RAdam's state.
struct AdamState {
  std::vector<at::Tensor> mu, nu;  // first and second moments (Adamax: the infinity norm)
  at::Tensor count;                // 0-d int64: the number of steps taken
  std::vector<at::Tensor> nu_max;  // AMSGrad's running maximum of nu; empty without
};

// unrollopt.adamax (torch.optim.Adamax's defaults).
struct AdamaxOptions {
  Hyperparameter lr = 2e-3;
  Hyperparameter beta1 = 0.9;
  Hyperparameter beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  bool maximize = false;
  bool moment_requires_grad = false;
};

// unrollopt.radam.
struct RAdamOptions {
  Hyperparameter lr = 1e-3;
  Hyperparameter beta1 = 0.9;
  Hyperparameter beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  bool decoupled_weight_decay = false;
  bool maximize = false;
  bool moment_requires_grad = false;
};

// unrollopt.nadam.
struct NAdamOptions {
  Hyperparameter lr = 2e-3;
  Hyperparameter beta1 = 0.9;
  Hyperparameter beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  double momentum_decay = 4e-3;
  bool decoupled_weight_decay = false;
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct NAdamState {
  std::vector<at::Tensor> mu, nu;
  at::Tensor mu_product;  // 0-d float64: the product of the momentum coefficients so far
  at::Tensor count;
};

// unrollopt.rmsprop (torch.optim.RMSprop's, with optax's nesterov and initial_scale).
struct RMSpropOptions {
  Hyperparameter lr = 1e-2;
  Hyperparameter alpha = 0.99;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  // A momentum that is 0 and does not require grad means no momentum buffer.
  Hyperparameter momentum = 0.0;
  bool centered = false;
  double initial_scale = 0.0;  // the running average of squares starts here
  bool nesterov = false;
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct RMSpropState {
  std::vector<at::Tensor> square_avg;
  std::vector<at::Tensor> grad_avg;         // centered only; else empty
  std::vector<at::Tensor> momentum_buffer;  // with momentum only; else empty
  at::Tensor count;
};

// unrollopt.adagrad.
struct AdagradOptions {
  Hyperparameter lr = 1e-2;
  Hyperparameter lr_decay = 0.0;
  Hyperparameter weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct AdagradState {
  std::vector<at::Tensor> sum;  // the sums of squared gradients
  at::Tensor count;
};

// unrollopt.adadelta (torch.optim.Adadelta's defaults).
struct AdadeltaOptions {
  Hyperparameter lr = 1.0;
  Hyperparameter rho = 0.9;
  double eps = 1e-6;
  Hyperparameter weight_decay = 0.0;
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct AdadeltaState {
  std::vector<at::Tensor> square_avg, acc_delta;
  at::Tensor count;
};

// unrollopt.sgd (torch.optim.SGD's momentum, dampening, Nesterov, weight decay).
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

// unrollopt.lion (Chen et al., 2023): the sign of an interpolated momentum.
struct LionOptions {
  Hyperparameter lr = 1e-4;
  Hyperparameter beta1 = 0.9;         // the interpolation whose sign is the step
  Hyperparameter beta2 = 0.99;        // the momentum's decay
  Hyperparameter weight_decay = 0.0;  // decoupled, as AdamW's
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct LionState {
  std::vector<at::Tensor> mu;  // the momentum
  at::Tensor count;
};

// unrollopt.adan (Xie et al., 2022; the authors' defaults and proximal weight decay).
struct AdanOptions {
  Hyperparameter lr = 1e-3;
  Hyperparameter beta1 = 0.98;  // the gradient's average
  Hyperparameter beta2 = 0.92;  // the gradient difference's average
  Hyperparameter beta3 = 0.99;  // the average of squares
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;  // proximal: p / (1 + lr * weight_decay)
  bool maximize = false;
  bool moment_requires_grad = false;
};

struct AdanState {
  std::vector<at::Tensor> mu, delta,
      nu;                             // averages of g, of g - g_prev, of (g + beta2 (g - g_prev))^2
  std::vector<at::Tensor> prev_grad;  // the previous step's gradient
  at::Tensor count;
};

// The state type of each optimizer's options.
template <class Options>
struct StateOf;
template <bool D>
struct StateOf<AdamFamilyOptions<D>> {
  using type = AdamState;
};
template <>
struct StateOf<AdamaxOptions> {
  using type = AdamState;
};
template <>
struct StateOf<RAdamOptions> {
  using type = AdamState;
};
template <>
struct StateOf<NAdamOptions> {
  using type = NAdamState;
};
template <>
struct StateOf<RMSpropOptions> {
  using type = RMSpropState;
};
template <>
struct StateOf<AdagradOptions> {
  using type = AdagradState;
};
template <>
struct StateOf<AdadeltaOptions> {
  using type = AdadeltaState;
};
template <>
struct StateOf<LionOptions> {
  using type = LionState;
};
template <>
struct StateOf<AdanOptions> {
  using type = AdanState;
};
template <>
struct StateOf<SgdOptions> {
  using type = SgdState;
};

template <class OptionsT>
class Optimizer {
 public:
  using Options = OptionsT;
  using State = typename StateOf<Options>::type;

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

// Every optimizer, as X(Name, Options): unrollopt::Name (here) and
// unrollopt::optim::Name (unrollopt/optim.h) are made from this list.
#define UNROLLOPT_FOR_EACH_OPTIMIZER(X) \
  X(Adam, AdamOptions)                  \
  X(AdamW, AdamWOptions)                \
  X(Adamax, AdamaxOptions)              \
  X(RAdam, RAdamOptions)                \
  X(NAdam, NAdamOptions)                \
  X(RMSprop, RMSpropOptions)            \
  X(Adagrad, AdagradOptions)            \
  X(Adadelta, AdadeltaOptions)          \
  X(Lion, LionOptions)                  \
  X(Adan, AdanOptions)                  \
  X(Sgd, SgdOptions)

#define UNROLLOPT_NAME_OPTIMIZER(Name, Options) using Name = Optimizer<Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_NAME_OPTIMIZER)
#undef UNROLLOPT_NAME_OPTIMIZER

// Every optimizer's settings at their defaults, by name: {"Adam", {{"lr", 1e-3},
// {"beta1", 0.9}, ...}}, ... (numbers as they are, flags as 0 or 1).
using Settings = std::vector<std::pair<std::string, double>>;
std::vector<std::pair<std::string, Settings>> default_settings();

}  // namespace unrollopt
