// The functional C++ optimizers (unrollopt/optimizers.h): trajectories against
// libtorch's torch::optim where it has the optimizer (Adam, AdamW, SGD,
// RMSprop, Adagrad) and against the float64 textbook equations where it has not
// (Adamax, RAdam, NAdam, Adadelta, Lion, Adan); meta-gradients with respect to a tensor
// learning rate against central differences; the checks of their settings.

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include <torch/csrc/autograd/autograd.h>
#include <torch/optim.h>

#include "testing.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;

constexpr int kSteps = 8;  // RAdam rectifies from step 6 on (beta2 = 0.999)

// Random float64 parameters of three shapes and a gradient sequence for them.
Problem problem(uint64_t seed) { return unrollopt::testing::problem(seed, {1, 7, 33}, kSteps); }

template <class Opt>
TensorVector run(const Opt& opt, const Problem& pr) {
  TensorVector params = pr.params;
  auto state = opt.init(params);
  for (const auto& g : pr.grads) {
    auto [updates, next] = opt.update(g, state, params);
    params = unrollopt::apply_updates(params, updates);
    state = std::move(next);
  }
  return params;
}

template <class TorchOptimizer, class TorchOptions>
TensorVector run_torch(const TorchOptions& options, const Problem& pr) {
  TensorVector params;
  for (const auto& p : pr.params) params.push_back(p.clone().set_requires_grad(true));
  TorchOptimizer opt(params, options);
  for (const auto& g : pr.grads) {
    for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = g[i].clone();
    opt.step();
  }
  TensorVector out;
  for (const auto& p : params) out.push_back(p.detach());
  return out;
}

void expect_all_close(const TensorVector& a, const TensorVector& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    expect_close(a[i], b[i], 1e-12, 1e-14, what + " [" + std::to_string(i) + "]");
  }
}

TEST(Optimizers, MatchTorchOptim) {
  namespace to = torch::optim;
  const Problem pr = problem(1);
  using Betas = std::tuple<double, double>;
  expect_all_close(
      run(unrollopt::Adam({.lr = 0.1, .beta1 = 0.8, .weight_decay = 0.01}), pr),
      run_torch<to::Adam>(to::AdamOptions(0.1).betas(Betas{0.8, 0.999}).weight_decay(0.01), pr),
      "Adam");
  expect_all_close(run(unrollopt::Adam({.lr = 0.1, .amsgrad = true}), pr),
                   run_torch<to::Adam>(to::AdamOptions(0.1).amsgrad(true), pr), "Adam amsgrad");
  expect_all_close(run(unrollopt::AdamW({.lr = 0.1, .weight_decay = 0.1}), pr),
                   run_torch<to::AdamW>(to::AdamWOptions(0.1).weight_decay(0.1), pr), "AdamW");
  expect_all_close(run(unrollopt::AdamW({.lr = 0.1, .amsgrad = true}), pr),
                   run_torch<to::AdamW>(to::AdamWOptions(0.1).amsgrad(true), pr), "AdamW amsgrad");
  expect_all_close(run(unrollopt::Sgd({.lr = 0.1}), pr),
                   run_torch<to::SGD>(to::SGDOptions(0.1), pr), "Sgd");
  expect_all_close(
      run(unrollopt::Sgd({.lr = 0.1, .momentum = 0.9, .dampening = 0.2, .weight_decay = 0.01}), pr),
      run_torch<to::SGD>(to::SGDOptions(0.1).momentum(0.9).dampening(0.2).weight_decay(0.01), pr),
      "Sgd momentum");
  expect_all_close(run(unrollopt::Sgd({.lr = 0.1, .momentum = 0.9, .nesterov = true}), pr),
                   run_torch<to::SGD>(to::SGDOptions(0.1).momentum(0.9).nesterov(true), pr),
                   "Sgd nesterov");
  expect_all_close(run(unrollopt::RMSprop({.lr = 0.01, .weight_decay = 0.01}), pr),
                   run_torch<to::RMSprop>(to::RMSpropOptions(0.01).weight_decay(0.01), pr),
                   "RMSprop");
  expect_all_close(
      run(unrollopt::RMSprop({.lr = 0.01, .alpha = 0.9, .momentum = 0.5, .centered = true}), pr),
      run_torch<to::RMSprop>(to::RMSpropOptions(0.01).alpha(0.9).momentum(0.5).centered(true), pr),
      "RMSprop centered momentum");
  expect_all_close(
      run(unrollopt::Adagrad({.lr = 0.1,
                              .lr_decay = 0.01,
                              .weight_decay = 0.01,
                              .initial_accumulator_value = 0.1}),
          pr),
      run_torch<to::Adagrad>(
          to::AdagradOptions(0.1).lr_decay(0.01).weight_decay(0.01).initial_accumulator_value(0.1),
          pr),
      "Adagrad");
}

// The textbook equations (torch.optim's documentation) for those libtorch lacks.
using Reference = std::function<void(Tensor& p, const Tensor& g, std::vector<Tensor>& s, int t)>;

TensorVector run_reference(const Reference& step, size_t num_states, const Problem& pr) {
  TensorVector params = pr.params;
  std::vector<std::vector<Tensor>> states(params.size(), std::vector<Tensor>(num_states));
  for (size_t i = 0; i < params.size(); ++i) {
    for (auto& s : states[i]) s = at::zeros_like(params[i]);
  }
  for (int t = 1; t <= kSteps; ++t) {
    for (size_t i = 0; i < params.size(); ++i) step(params[i], pr.grads[t - 1][i], states[i], t);
  }
  return params;
}

TEST(Optimizers, MatchTextbookEquations) {
  const Problem pr = problem(2);
  const double lr = 0.05, b1 = 0.8, b2 = 0.999, eps = 1e-8, wd = 0.01;
  expect_all_close(run(unrollopt::Adamax({.lr = lr, .beta1 = b1, .weight_decay = wd}), pr),
                   run_reference(
                       [&](Tensor& p, const Tensor& g0, std::vector<Tensor>& s, int t) {
                         const Tensor g = g0 + wd * p;
                         s[0] = b1 * s[0] + (1 - b1) * g;
                         s[1] = at::maximum(b2 * s[1], g.abs() + eps);
                         p = p - lr / (1 - std::pow(b1, t)) * s[0] / s[1];
                       },
                       2, pr),
                   "Adamax");
  const double rho_inf = 2 / (1 - b2) - 1;
  expect_all_close(run(unrollopt::RAdam({.lr = lr, .beta1 = b1, .weight_decay = wd}), pr),
                   run_reference(
                       [&](Tensor& p, const Tensor& g0, std::vector<Tensor>& s, int t) {
                         const Tensor g = g0 + wd * p;
                         s[0] = b1 * s[0] + (1 - b1) * g;
                         s[1] = b2 * s[1] + (1 - b2) * g * g;
                         const Tensor m_hat = s[0] / (1 - std::pow(b1, t));
                         const double bt = std::pow(b2, t), rho_t = rho_inf - 2 * t * bt / (1 - bt);
                         if (rho_t > 5) {
                           const double r = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                                                      ((rho_inf - 4) * (rho_inf - 2) * rho_t));
                           p = p - lr * m_hat * r * std::sqrt(1 - bt) / (s[1].sqrt() + eps);
                         } else {
                           p = p - lr * m_hat;
                         }
                       },
                       2, pr),
                   "RAdam");
  const double psi = 4e-3;
  double product = 1;
  int last_t = 0;
  expect_all_close(run(unrollopt::NAdam({.lr = lr, .beta1 = b1, .weight_decay = wd}), pr),
                   run_reference(
                       [&](Tensor& p, const Tensor& g0, std::vector<Tensor>& s, int t) {
                         const auto mu = [&](int k) {
                           return b1 * (1 - 0.5 * std::pow(0.96, k * psi));
                         };
                         if (t != last_t)
                           product *= mu(t), last_t = t;  // once per step, not per tensor
                         const Tensor g = g0 + wd * p;
                         s[0] = b1 * s[0] + (1 - b1) * g;
                         s[1] = b2 * s[1] + (1 - b2) * g * g;
                         const Tensor denom = (s[1] / (1 - std::pow(b2, t))).sqrt() + eps;
                         p = p - lr * (1 - mu(t)) / (1 - product) * g / denom -
                             lr * mu(t + 1) / (1 - product * mu(t + 1)) * s[0] / denom;
                       },
                       2, pr),
                   "NAdam");
  const double rho = 0.9, eps_d = 1e-6;
  expect_all_close(run(unrollopt::Adadelta({.lr = 0.5, .rho = rho, .weight_decay = wd}), pr),
                   run_reference(
                       [&](Tensor& p, const Tensor& g0, std::vector<Tensor>& s, int) {
                         const Tensor g = g0 + wd * p;
                         s[0] = rho * s[0] + (1 - rho) * g * g;
                         const Tensor delta = (s[1] + eps_d).sqrt() / (s[0] + eps_d).sqrt() * g;
                         s[1] = rho * s[1] + (1 - rho) * delta * delta;
                         p = p - 0.5 * delta;
                       },
                       2, pr),
                   "Adadelta");
  const double lion_b2 = 0.99, lion_wd = 0.5;
  expect_all_close(
      run(unrollopt::Lion({.lr = 0.01, .beta1 = b1, .beta2 = lion_b2, .weight_decay = lion_wd}),
          pr),
      run_reference(
          [&](Tensor& p, const Tensor& g, std::vector<Tensor>& s, int) {
            // Chen et al. (2023), Algorithm 2.
            const Tensor c = b1 * s[0] + (1 - b1) * g;
            p = p - 0.01 * (c.sign() + lion_wd * p);
            s[0] = lion_b2 * s[0] + (1 - lion_b2) * g;
          },
          1, pr),
      "Lion");
  const double a_b1 = 0.9, a_b2 = 0.8, a_b3 = 0.95, a_lr = 0.05, a_wd = 0.1, a_eps = 1e-8;
  expect_all_close(
      run(unrollopt::Adan(
              {.lr = a_lr, .beta1 = a_b1, .beta2 = a_b2, .beta3 = a_b3, .weight_decay = a_wd}),
          pr),
      run_reference(
          [&](Tensor& p, const Tensor& g, std::vector<Tensor>& s, int t) {
            // Xie et al. (2022), the authors' implementation: s = (m, v, n, g_prev).
            const Tensor d = t == 1 ? at::zeros_like(g) : g - s[3];
            s[0] = a_b1 * s[0] + (1 - a_b1) * g;
            s[1] = a_b2 * s[1] + (1 - a_b2) * d;
            const Tensor z = g + a_b2 * d;
            s[2] = a_b3 * s[2] + (1 - a_b3) * z * z;
            s[3] = g;
            const Tensor denom = s[2].sqrt() / std::sqrt(1 - std::pow(a_b3, t)) + a_eps;
            const Tensor n = s[0] / (1 - std::pow(a_b1, t)) + a_b2 * s[1] / (1 - std::pow(a_b2, t));
            p = (p - a_lr * n / denom) / (1 + a_lr * a_wd);
          },
          4, pr),
      "Adan");
}

// d/d lr of a loss after three differentiable steps on a quadratic, against a
// central difference (float64: the truncation error is O(h^2) ~ 1e-10).
template <class Opt, class Options>
void expect_lr_gradient(Options options, const std::string& what) {
  const Problem pr = problem(3);
  const double lr0 = 0.05, h = 1e-5;
  const auto outer = [&](const Tensor& lr) -> Tensor {
    options.lr = lr;
    const Opt opt(options);
    TensorVector params;
    for (const auto& p : pr.params) params.push_back(p.clone().set_requires_grad(true));
    TensorVector x = params;
    auto state = opt.init(x);
    for (int k = 0; k < 3; ++k) {
      Tensor inner = at::zeros({}, kF64);
      for (size_t i = 0; i < x.size(); ++i) inner = inner + ((x[i] - pr.grads[k][i]).pow(2)).sum();
      const auto g = torch::autograd::grad({inner}, x, {}, true, /*create_graph=*/true);
      auto [updates, next] = opt.update(g, state, x);
      x = unrollopt::apply_updates(x, updates);
      state = std::move(next);
    }
    Tensor loss = at::zeros({}, kF64);
    for (const auto& xi : x) loss = loss + xi.pow(2).sum();
    return loss;
  };
  const Tensor lr = scalar(lr0, true);
  const Tensor grad = torch::autograd::grad({outer(lr)}, {lr})[0];
  const Tensor up = outer(scalar(lr0 + h)), down = outer(scalar(lr0 - h));
  const double fd = (up.item<double>() - down.item<double>()) / (2 * h);
  EXPECT_NEAR(grad.item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd))) << what;
  EXPECT_NE(fd, 0) << what;
}

TEST(Optimizers, LearningRateGradientsMatchFiniteDifferences) {
  expect_lr_gradient<unrollopt::Adam>(unrollopt::AdamOptions{.weight_decay = 0.01, .amsgrad = true},
                                      "Adam");
  expect_lr_gradient<unrollopt::AdamW>(unrollopt::AdamWOptions{}, "AdamW");
  expect_lr_gradient<unrollopt::Adamax>(unrollopt::AdamaxOptions{}, "Adamax");
  expect_lr_gradient<unrollopt::RAdam>(unrollopt::RAdamOptions{.decoupled_weight_decay = true},
                                       "RAdam");
  expect_lr_gradient<unrollopt::NAdam>(unrollopt::NAdamOptions{.weight_decay = 0.01}, "NAdam");
  expect_lr_gradient<unrollopt::RMSprop>(
      unrollopt::RMSpropOptions{.momentum = 0.5, .centered = true, .initial_scale = 0.1},
      "RMSprop");
  expect_lr_gradient<unrollopt::Adagrad>(unrollopt::AdagradOptions{.lr_decay = 0.1}, "Adagrad");
  expect_lr_gradient<unrollopt::Adadelta>(unrollopt::AdadeltaOptions{}, "Adadelta");
  expect_lr_gradient<unrollopt::Lion>(unrollopt::LionOptions{.weight_decay = 0.1}, "Lion");
  expect_lr_gradient<unrollopt::Adan>(unrollopt::AdanOptions{.weight_decay = 0.1}, "Adan");
  expect_lr_gradient<unrollopt::Sgd>(unrollopt::SgdOptions{.momentum = 0.9, .nesterov = true},
                                     "Sgd");
}

// --- three unrolled steps --------------------------------------------------------

// Three unrolled Adam steps of the C++ API vs the same loop in plain ops.
TEST(Adam, UnrolledMetaGradientMatchesPlainOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const Tensor a = at::randn({6, 4}, gen, kF64), b = at::randn({6}, gen, kF64);
  const Tensor theta0 = at::randn({4}, gen, kF64);
  const Tensor phi0 = at::randn({4}, gen, kF64);
  const double lr = 0.1, beta1 = 0.9, beta2 = 0.99, eps = 1e-8, weight_decay = 0.01;
  const auto inner_grad = [&](const Tensor& theta, const Tensor& phi) {
    const Tensor loss = (at::mv(a, theta) - b).square().sum() + (theta - phi).square().sum();
    return torch::autograd::grad({loss}, {theta}, {}, /*retain_graph=*/true,
                                 /*create_graph=*/true)[0];
  };
  const auto outer = [](const Tensor& theta) { return theta.pow(3).sum(); };

  const Tensor phi = phi0.clone().requires_grad_(true);
  unrollopt::Adam adam(
      {.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay});
  TensorVector params{theta0.clone().requires_grad_(true)};
  auto state = adam.init(params);
  for (int k = 0; k < 3; ++k) {
    const TensorVector grads{inner_grad(params[0], phi)};
    TensorVector updates;
    std::tie(updates, state) = adam.update(grads, state, params);
    params = unrollopt::apply_updates(params, updates);
  }
  const Tensor meta = torch::autograd::grad({outer(params[0])}, {phi})[0];

  // Textbook Adam.
  const Tensor phi_ref = phi0.clone().requires_grad_(true);
  Tensor theta = theta0.clone().requires_grad_(true);
  Tensor m = at::zeros({4}, kF64), v = at::zeros({4}, kF64);
  for (int k = 1; k <= 3; ++k) {
    const Tensor g = inner_grad(theta, phi_ref) + weight_decay * theta;
    m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g;
    const double bc1 = 1 - std::pow(beta1, k), bc2 = 1 - std::pow(beta2, k);
    theta = theta - lr * (m / bc1) / ((v / bc2).sqrt() + eps);
  }
  const Tensor meta_ref = torch::autograd::grad({outer(theta)}, {phi_ref})[0];
  expect_close(params[0], theta, 1e-12, 0, "parameters after 3 steps");
  expect_close(meta, meta_ref, 1e-10, 0, "meta-gradient");
  EXPECT_EQ(state.count.item<int64_t>(), 3);
}

// Three unrolled SGD steps (Nesterov) of the C++ API vs the same loop in plain ops.
TEST(Sgd, UnrolledMetaGradientMatchesPlainOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const Tensor a = at::randn({6, 4}, gen, kF64), b = at::randn({6}, gen, kF64);
  const Tensor theta0 = at::randn({4}, gen, kF64), phi0 = at::randn({4}, gen, kF64);
  const auto inner_grad = [&](const Tensor& theta, const Tensor& phi) {
    const Tensor loss = (at::mv(a, theta) - b).square().sum() + (theta - phi).square().sum();
    return torch::autograd::grad({loss}, {theta}, {}, true, /*create_graph=*/true)[0];
  };
  const Tensor lr = scalar(0.05, true);
  const unrollopt::Sgd sgd({.lr = lr, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
  const Tensor phi = phi0.clone().requires_grad_(true);
  TensorVector params{theta0.clone().requires_grad_(true)};
  auto state = sgd.init(params);
  for (int k = 0; k < 3; ++k) {
    TensorVector updates;
    std::tie(updates, state) = sgd.update({inner_grad(params[0], phi)}, state, params);
    params = unrollopt::apply_updates(params, updates);
  }
  const auto meta = torch::autograd::grad({params[0].pow(3).sum()}, {phi, lr});

  const Tensor phi_ref = phi0.clone().requires_grad_(true);
  Tensor theta = theta0.clone().requires_grad_(true), buf;
  for (int k = 1; k <= 3; ++k) {
    const Tensor g = inner_grad(theta, phi_ref) + 0.01 * theta;
    buf = k == 1 ? g : 0.9 * buf + g;
    theta = theta - lr * (g + 0.9 * buf);
  }
  const auto meta_ref = torch::autograd::grad({theta.pow(3).sum()}, {phi_ref, lr});
  expect_close(params[0], theta, 1e-12, 0, "parameters after 3 steps");
  expect_close(meta[0], meta_ref[0], 1e-10, 0, "meta-gradient");
  expect_close(meta[1], meta_ref[1], 1e-10, 0, "gradient of lr");
}

// The C++ API's Adam against the operator called as Python's unrollopt.adam
// calls it (hyperparameters as float64 0-d tensors, the step count + 1): three
// unrolled steps of a quartic loss give the same bits, and the same
// meta-gradients with respect to the initial parameters and, given as
// tensors, the hyperparameters (to 1e-13 of the largest: the two backward
// graphs may sum in another order).
struct ApiCase {
  std::string name;
  double weight_decay;
  bool maximize, tensor_hyper;
};
void PrintTo(const ApiCase& c, std::ostream* os) { *os << c.name; }

class AdamApi : public ::testing::TestWithParam<ApiCase> {};
INSTANTIATE_TEST_SUITE_P(Cases, AdamApi,
                         ::testing::Values(ApiCase{"plain", 0.0, false, false},
                                           ApiCase{"tensor_hyper", 0.0, false, true},
                                           ApiCase{"decay_maximize", 0.02, true, false},
                                           ApiCase{"decay_maximize_tensor_hyper", 0.02, true,
                                                   true}),
                         [](const auto& info) { return info.param.name; });

TEST_P(AdamApi, MatchesOperatorCalls) {
  const ApiCase& c = GetParam();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const Tensor x = at::randn({5, 3}, gen, kF64), y = at::randn({5}, gen, kF64);
  const Tensor w0 = at::randn({3}, gen, kF64).requires_grad_(true);
  const Tensor b0 = at::randn({1}, gen, kF64).requires_grad_(true);
  const double eps = 1e-6, eps_root = 1e-7;
  const TensorVector hyper{scalar(0.05, c.tensor_hyper), scalar(0.85, c.tensor_hyper),
                           scalar(0.99, c.tensor_hyper), scalar(c.weight_decay, c.tensor_hyper)};
  const auto loss_of = [&](const TensorVector& p) {
    return (at::mv(x, p[0]) + p[1] - y).pow(4).mean();
  };
  struct Result {
    TensorVector params, mu, meta;
    int64_t count;
  };
  const auto finish = [&](const TensorVector& params, const TensorVector& mu, const Tensor& count) {
    TensorVector wrt{w0, b0};
    if (c.tensor_hyper) wrt.insert(wrt.end(), hyper.begin(), hyper.end());
    const Tensor outer = params[0].square().sum() + params[1].sum();
    return Result{params, mu, torch::autograd::grad({outer}, wrt), count.item<int64_t>()};
  };
  const auto api = [&] {
    const auto h = [&](size_t i) -> unrollopt::Hyperparameter {
      if (c.tensor_hyper) return hyper[i];
      return hyper[i].item<double>();
    };
    const unrollopt::Adam adam({.lr = h(0),
                                .beta1 = h(1),
                                .beta2 = h(2),
                                .eps = eps,
                                .eps_root = eps_root,
                                .weight_decay = h(3),
                                .maximize = c.maximize});
    TensorVector params{w0, b0};
    auto state = adam.init(params);
    EXPECT_EQ(state.count.item<int64_t>(), 0);
    for (int k = 0; k < 3; ++k) {
      const auto grads = torch::autograd::grad({loss_of(params)}, params, {}, true, true);
      TensorVector updates;
      std::tie(updates, state) = adam.update(grads, state, params);
      for (const auto& u : updates) EXPECT_TRUE(u.grad_fn() != nullptr);
      params = unrollopt::apply_updates(params, updates);
    }
    return finish(params, state.mu, state.count);
  }();
  const auto op = [&] {
    TensorVector params{w0, b0}, states;
    for (int k = 0; k < 2; ++k) {
      for (const auto& p : params) states.push_back(at::zeros_like(p));
    }
    Tensor count = at::zeros({}, at::kLong);
    for (int k = 0; k < 3; ++k) {
      const auto grads = torch::autograd::grad({loss_of(params)}, params, {}, true, true);
      count = count + 1;
      // As the C++ API does: the params only for a weight decay (one that may
      // be learned, requiring grad, or is not 0).
      const bool decays = c.tensor_hyper || c.weight_decay != 0;
      auto [updates, next] =
          unrollopt::ops::fused_step("adam", grads, states, decays ? params : TensorVector{}, count,
                                     hyper, {eps, eps_root, c.maximize ? 1.0 : 0.0});
      states = next;
      params = unrollopt::apply_updates(params, updates);
    }
    return finish(params, {states[0], states[1]}, count);
  }();
  EXPECT_EQ(api.count, 3);
  EXPECT_EQ(op.count, 3);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(at::equal(api.params[i], op.params[i])) << "params " << i;
    EXPECT_TRUE(at::equal(api.mu[i], op.mu[i])) << "mu " << i;
  }
  ASSERT_EQ(api.meta.size(), c.tensor_hyper ? 6u : 2u);
  for (size_t i = 0; i < api.meta.size(); ++i) {
    const double scale = op.meta[i].abs().max().item<double>();
    EXPECT_TRUE(at::isfinite(api.meta[i]).all().item<bool>()) << i;
    EXPECT_GT(api.meta[i].abs().max().item<double>(), 0) << i;
    expect_close(api.meta[i], op.meta[i], 0, 1e-13 * scale, "meta-gradient " + std::to_string(i));
  }
}

// AdamOptions::moment_requires_grad: init() makes moments that require grad,
// and the gradients with respect to them are the operator's.
TEST(Adam, MomentRequiresGrad) {
  const Tensor w0 = at::tensor({0.5, -1.5, 2.0}, kF64).requires_grad_(true);
  const unrollopt::Adam adam({.lr = 0.1, .eps = 1e-3, .moment_requires_grad = true});
  const auto state = adam.init({w0});
  ASSERT_EQ(state.mu.size(), 1u);
  EXPECT_TRUE(state.mu[0].requires_grad() && state.nu[0].requires_grad());
  EXPECT_EQ(state.count.scalar_type(), at::kLong);
  const TensorVector grads = torch::autograd::grad({w0.pow(3).sum()}, {w0}, {}, true, true);
  const auto [updates, next] = adam.update(grads, state);
  const auto got = torch::autograd::grad({updates[0].sum()}, {state.mu[0], state.nu[0]});

  const TensorVector moments{at::zeros_like(w0).requires_grad_(true),
                             at::zeros_like(w0).requires_grad_(true)};
  const auto [u, s] = unrollopt::ops::fused_step(
      "adam", grads, moments, {}, at::scalar_tensor(1, at::kLong),
      {scalar(0.1), scalar(0.9), scalar(0.999), scalar(0.0)}, {1e-3, 0.0, 0.0});
  const auto want = torch::autograd::grad({u[0].sum()}, moments);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(at::equal(got[i], want[i])) << i;
}

// --- settings and arguments --------------------------------------------------------

TEST(Adam, BadArgumentsAreRefused) {
  const unrollopt::Adam adam({.lr = 0.1, .weight_decay = 0.1});
  const auto state = adam.init({at::ones({2}, kF64)});
  // A weight decay needs params.
  EXPECT_THROW(adam.update({at::ones({2}, kF64)}, state), c10::ValueError);
  EXPECT_NE(error_message([&] { adam.update({at::ones({2}, kF64)}, state); }).find("params"),
            std::string::npos);
  const TensorVector three{at::ones({3}, kF64)};
  EXPECT_THROW(adam.update(three, state, three), c10::ValueError);
  EXPECT_NE(error_message([&] { adam.update(three, state, three); }).find("shape"),
            std::string::npos);
  const TensorVector float32{at::ones({2})};
  EXPECT_THROW(adam.update(float32, state, float32), c10::TypeError);
  EXPECT_NE(error_message([&] { adam.update(float32, state, float32); }).find("dtype"),
            std::string::npos);
  const TensorVector two{at::ones({1}), at::ones({1})}, one{at::ones({1})};
  EXPECT_THROW(unrollopt::apply_updates(two, one), c10::ValueError);
  EXPECT_NE(
      error_message([&] { unrollopt::apply_updates(two, one); }).find("2 params but 1 updates"),
      std::string::npos);
}

TEST(Sgd, BadSettingsAreRefused) {
  EXPECT_THROW(unrollopt::Sgd({.lr = 0.1, .dampening = 0.5, .nesterov = true}), c10::ValueError);
  EXPECT_THROW(unrollopt::Sgd({.lr = -0.1}), c10::ValueError);
  // The declaration's requirements, each named.
  EXPECT_NE(error_message([] {
              unrollopt::Sgd({.lr = 0.1, .nesterov = true});
            }).find("unrollopt.Sgd: nesterov=true requires momentum != 0"),
            std::string::npos);
  EXPECT_NE(error_message([] {
              unrollopt::Sgd({.momentum = 0.9, .dampening = 0.5, .nesterov = true});
            }).find("unrollopt.Sgd: nesterov=true requires dampening = 0"),
            std::string::npos);
}

TEST(Adam, WarnsOnceWhenGradsDoNotRequireGradButParamsDo) {
  const Tensor p = at::randn({5}).requires_grad_(true);
  const unrollopt::Adam adam({.lr = 0.1});
  const auto state = adam.init({p});
  const auto warnings_of = [&](const Tensor& g) {
    struct Collect : c10::WarningHandler {
      std::vector<std::string> messages;
      void process(const c10::Warning& w) override { messages.push_back(w.msg()); }
    } collect;
    const c10::WarningUtils::WarningHandlerGuard guard(&collect);
    adam.update({g}, state, {p});
    return collect.messages;
  };
  const Tensor loss = (p * p).sum();
  const Tensor with_graph = torch::autograd::grad({loss}, {p}, {}, true, /*create_graph=*/true)[0];
  EXPECT_TRUE(warnings_of(with_graph).empty());
  const Tensor without = torch::autograd::grad({loss}, {p})[0];
  const auto first = warnings_of(without);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_NE(first[0].find("create_graph"), std::string::npos) << first[0];
  EXPECT_TRUE(warnings_of(without).empty()) << "warned twice";
}

// The message of what `make` throws (empty if nothing).
std::string thrown(const std::function<void()>& make) {
  try {
    make();
  } catch (const c10::ValueError& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(Optimizers, SettingsOutOfRangeAreRefusedByName) {
  // Each of Adam's, by its name.
  const std::vector<std::pair<std::string, std::function<void()>>> adam = {
      {"lr", [] { unrollopt::Adam({.lr = -1.0}); }},
      {"beta1", [] { unrollopt::Adam({.beta1 = 1.0}); }},
      {"beta2", [] { unrollopt::Adam({.beta2 = -0.1}); }},
      {"beta2", [] { unrollopt::Adam({.beta2 = -0.5}); }},
      {"eps", [] { unrollopt::Adam({.eps = -1e-8}); }},
      {"eps", [] { unrollopt::Adam({.eps = -1.0}); }},
      {"eps_root", [] { unrollopt::Adam({.eps_root = -1.0}); }},
      {"weight_decay", [] { unrollopt::Adam({.weight_decay = -0.1}); }},
      {"weight_decay", [] { unrollopt::Adam({.weight_decay = -1.0}); }}};
  for (const auto& [name, make] : adam) {
    EXPECT_NE(thrown(make).find("unrollopt.Adam: Invalid " + name + ":"), std::string::npos)
        << name;
  }
  // The messages Python's check gives (python/tests/test_errors.py).
  EXPECT_EQ(thrown([] {
              unrollopt::Adam({.beta1 = 1.0});
            }).rfind("unrollopt.Adam: Invalid beta1: 1 (expected 0 <= beta1 < 1)", 0),
            0u);
  EXPECT_NE(thrown([] {
              unrollopt::RMSprop({.alpha = 1.5});
            }).find("Invalid alpha: 1.5 (expected 0 <= alpha <= 1)"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::Adamax({.beta1 = 1.0}); }).find("Adamax: Invalid beta1"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::RMSprop({.alpha = 1.5}); }).find("RMSprop: Invalid alpha"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::Adadelta({.rho = -0.1}); }).find("Adadelta: Invalid rho"),
            std::string::npos);
  EXPECT_NE(thrown([] {
              unrollopt::NAdam({.momentum_decay = -1});
            }).find("NAdam: Invalid momentum_decay"),
            std::string::npos);
  EXPECT_NE(thrown([] {
              unrollopt::Adagrad({.initial_accumulator_value = -1});
            }).find("Adagrad: Invalid initial_accumulator_value"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::Lion({.beta2 = 1.0}); }).find("Lion: Invalid beta2"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::Adan({.beta3 = 1.0}); }).find("Adan: Invalid beta3"),
            std::string::npos);
  EXPECT_NE(thrown([] {
              unrollopt::RMSprop({.nesterov = true});
            }).find("RMSprop: nesterov=true requires momentum != 0"),
            std::string::npos);
  EXPECT_NE(thrown([] { unrollopt::AdamW({.lr = -1}); }).find("AdamW: Invalid lr"),
            std::string::npos);
  const unrollopt::AdamW adamw;  // weight_decay 1e-2 by default: the params are needed
  const TensorVector p{at::ones({2}, kF64)};
  EXPECT_NE(thrown([&] { adamw.update(p, adamw.init(p)); }).find("params are needed"),
            std::string::npos);
}

TEST(Optimizers, StateHoldsWhatTheOptionsSelect) {
  const TensorVector p{at::ones({2}, kF64), at::ones({3}, kF64)};
  const auto rms =
      unrollopt::RMSprop({.momentum = 0.9, .centered = true, .initial_scale = 0.5}).init(p);
  EXPECT_EQ(rms.square_avg.size(), 2u);
  EXPECT_EQ(rms.grad_avg.size(), 2u);
  EXPECT_EQ(rms.momentum_buffer.size(), 2u);
  EXPECT_EQ(rms.square_avg[1].sum().item<double>(), 1.5);  // starts at initial_scale
  EXPECT_TRUE(unrollopt::RMSprop().init(p).momentum_buffer.empty());
  EXPECT_EQ(unrollopt::Adam({.amsgrad = true}).init(p).nu_max.size(), 2u);
  EXPECT_TRUE(unrollopt::Adam().init(p).nu_max.empty());
  const unrollopt::NAdam nadam;
  auto [updates, next] = nadam.update(p, nadam.init(p));
  EXPECT_NEAR(next.mu_product.item<double>(), 0.9 * (1 - 0.5 * std::pow(0.96, 4e-3)), 1e-15);
  EXPECT_EQ(next.count.item<int64_t>(), 1);
  EXPECT_EQ(updates.size(), 2u);
}

}  // namespace
