// The fused SGD operators (sgd, sgd_momentum) against torch.optim.SGD's
// equations in plain float64 ops, and their backward against autograd of them.

#include <gtest/gtest.h>

#include <torch/csrc/autograd/autograd.h>

#include "testing.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;

struct Case {
  std::string name;
  double step;
  bool momentum, nesterov, maximize;
};
// ctest shows a parameter by this (GoogleTest would print its bytes, heap pointers included).
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Sgd : public ::testing::TestWithParam<Case> {};

// Forward and backward of one step on three tensors, every input and
// hyperparameter requiring grad.
TEST_P(Sgd, MatchesReferenceAndItsAutograd) {
  const Case& c = GetParam();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  const auto randn = [&](int64_t n) { return at::randn({n}, gen, kF64).set_requires_grad(true); };
  const std::vector<int64_t> sizes{1, 1025, 20000};
  TensorVector g, buf, p;
  for (int64_t n : sizes) {
    g.push_back(randn(n));
    buf.push_back(randn(n));
    p.push_back(randn(n));
  }
  const Tensor lr = scalar(0.1, true), momentum = scalar(0.9, true),
               dampening = scalar(c.nesterov ? 0.0 : 0.2, true), wd = scalar(0.01, true);
  const std::vector<double> options{c.maximize ? 1.0 : 0.0, c.nesterov ? 1.0 : 0.0};
  const Tensor step = at::scalar_tensor(c.step, at::kLong);
  TensorVector updates, new_buf, hyper;
  if (c.momentum) {
    hyper = {lr, momentum, dampening, wd};
    std::tie(updates, new_buf) =
        unrollopt::ops::fused_step("sgd_momentum", g, buf, p, step, hyper, options);
  } else {
    hyper = {lr, wd};
    std::tie(updates, new_buf) = unrollopt::ops::fused_step("sgd", g, {}, p, step, hyper, options);
  }
  TensorVector outputs, expected, cotangents;
  for (size_t i = 0; i < g.size(); ++i) {
    const Tensor gp = (c.maximize ? -g[i] : g[i]) + wd * p[i];
    Tensor d = gp;
    if (c.momentum) {
      const Tensor b = c.step == 1 ? gp : momentum * buf[i] + (1 - dampening) * gp;
      d = c.nesterov ? gp + momentum * b : b;
      outputs.push_back(new_buf[i]);
      expected.push_back(b);
    }
    outputs.push_back(updates[i]);
    expected.push_back(-lr * d);
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    expect_close(outputs[i], expected[i], 1e-14, 1e-15, "output " + std::to_string(i));
    cotangents.push_back(at::randn(outputs[i].sizes(), gen, kF64));
  }
  TensorVector inputs(g);
  if (c.momentum) inputs.insert(inputs.end(), buf.begin(), buf.end());
  inputs.insert(inputs.end(), p.begin(), p.end());
  inputs.insert(inputs.end(), hyper.begin(), hyper.end());
  const auto fused = torch::autograd::grad(outputs, inputs, cotangents, true, false, true);
  const auto reference = torch::autograd::grad(expected, inputs, cotangents, true, false, true);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor want = reference[i].defined() ? reference[i] : at::zeros_like(inputs[i]);
    ASSERT_TRUE(fused[i].defined()) << "gradient " << i;
    expect_close(fused[i], want, 1e-12, 1e-13, "gradient " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Steps, Sgd,
                         ::testing::Values(Case{"plain", 3, false, false, false},
                                           Case{"maximize", 1, false, false, true},
                                           Case{"momentum_first_step", 1, true, false, false},
                                           Case{"momentum", 3, true, false, false},
                                           Case{"nesterov_first_step", 1, true, true, false},
                                           Case{"nesterov_maximize", 4, true, true, true}),
                         [](const auto& info) { return info.param.name; });

// Three unrolled steps of the C++ API vs the same loop in plain ops.
TEST(SgdApi, UnrolledMetaGradientMatchesPlainOps) {
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
  EXPECT_THROW(unrollopt::Sgd({.lr = 0.1, .dampening = 0.5, .nesterov = true}), c10::ValueError);
  EXPECT_THROW(unrollopt::Sgd({.lr = -0.1}), c10::ValueError);
}

}  // namespace
