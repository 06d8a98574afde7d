// The fused Adam operators against independent references: plain libtorch math
// in float64 for the forward, autograd of that math for the backward.

#include <gtest/gtest.h>

#include <functional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include "testing.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;

struct Hyper {
  double lr = 0.05, beta1 = 0.9, beta2 = 0.99, weight_decay = 0.0, eps = 1e-8, eps_root = 0.0;
  bool maximize = false;
  double step = 3;
};

struct Ref {
  Tensor update, mu, nu;
};

// Textbook Adam in plain tensor ops (any dtype; used in float64).
Ref reference_adam(const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& p,
                   const Tensor& lr, const Tensor& b1, const Tensor& b2, const Tensor& wd,
                   const Hyper& h) {
  const Tensor gp = (h.maximize ? -g : g) + wd * p;
  const Tensor m1 = b1 * m + (1 - b1) * gp;
  const Tensor v1 = b2 * v + (1 - b2) * gp * gp;
  const Tensor bc1 = 1 - b1.pow(h.step);
  const Tensor bc2 = 1 - b2.pow(h.step);
  return {-lr * (m1 / bc1) / ((v1 / bc2 + h.eps_root).sqrt() + h.eps), m1, v1};
}

// unrollopt::adam with Adam's arguments spelled out.
std::tuple<TensorVector, TensorVector, TensorVector> adam_op(
    const TensorVector& g, const TensorVector& m, const TensorVector& v, const TensorVector& p,
    const Tensor& step, const Tensor& lr, const Tensor& b1, const Tensor& b2, const Tensor& wd,
    double eps, double eps_root, bool maximize) {
  TensorVector states(m);
  states.insert(states.end(), v.begin(), v.end());
  auto [u, s] = unrollopt::ops::fused_step("adam", g, states, p, step, {lr, b1, b2, wd},
                                           {eps, eps_root, maximize ? 1.0 : 0.0});
  const auto n = static_cast<std::ptrdiff_t>(g.size());
  return {u, TensorVector(s.begin(), s.begin() + n), TensorVector(s.begin() + n, s.end())};
}

void adam_inplace_op(const TensorVector& p, const TensorVector& g, const TensorVector& m,
                     const TensorVector& v, const Tensor& step, const Tensor& lr, const Tensor& b1,
                     const Tensor& b2, const Tensor& wd, double eps, double eps_root, bool maximize,
                     bool update_params) {
  TensorVector states(m);
  states.insert(states.end(), v.begin(), v.end());
  unrollopt::ops::fused_step_("adam", p, g, states, step, {lr, b1, b2, wd},
                              {eps, eps_root, maximize ? 1.0 : 0.0}, update_params);
}

struct Inputs {
  TensorVector g, m, v, p;
};

// Random inputs with second moments >= 0; never all zeros.
Inputs random_inputs(const std::vector<int64_t>& sizes, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Inputs in;
  for (int64_t n : sizes) {
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    in.g.push_back(at::randn({n}, gen, opts).to(dtype));
    in.m.push_back((0.1 * at::randn({n}, gen, opts)).to(dtype));
    in.v.push_back((0.1 * at::rand({n}, gen, opts)).to(dtype));
    in.p.push_back(at::randn({n}, gen, opts).to(dtype));
  }
  return in;
}

auto call_adam(const Inputs& in, const Hyper& h, bool with_params = true) {
  return adam_op(in.g, in.m, in.v, with_params ? in.p : TensorVector{},
                 at::scalar_tensor(h.step, at::kLong), scalar(h.lr), scalar(h.beta1),
                 scalar(h.beta2), scalar(h.weight_decay), h.eps, h.eps_root, h.maximize);
}

struct ForwardCase {
  std::string name;
  at::ScalarType dtype;
  double rtol, atol;
  Hyper hyper;
};
// ctest shows a parameter by this (GoogleTest would print its bytes, heap pointers included).
void PrintTo(const ForwardCase& c, std::ostream* os) { *os << c.name; }

class Forward : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(Forward, MatchesFloat64Reference) {
  const auto& c = GetParam();
  const Inputs in = random_inputs({0, 1, 3, 1025, 2049, 65537}, c.dtype, 1);
  const auto [update, mu, nu] = call_adam(in, c.hyper);
  ASSERT_EQ(update.size(), in.g.size());
  for (size_t i = 0; i < in.g.size(); ++i) {
    const auto d = [](const Tensor& t) { return t.to(at::kDouble); };
    const Ref r = reference_adam(d(in.g[i]), d(in.m[i]), d(in.v[i]), d(in.p[i]), scalar(c.hyper.lr),
                                 scalar(c.hyper.beta1), scalar(c.hyper.beta2),
                                 scalar(c.hyper.weight_decay), c.hyper);
    EXPECT_EQ(update[i].scalar_type(), c.dtype);
    expect_close(update[i], r.update, c.rtol, c.atol, "update " + std::to_string(i));
    expect_close(mu[i], r.mu, c.rtol, c.atol, "mu " + std::to_string(i));
    expect_close(nu[i], r.nu, c.rtol, c.atol, "nu " + std::to_string(i));
  }
}

Hyper with(std::function<void(Hyper&)> f) {
  Hyper h;
  f(h);
  return h;
}

INSTANTIATE_TEST_SUITE_P(
    Adam, Forward,
    ::testing::Values(
        ForwardCase{"float64", at::kDouble, 1e-13, 1e-15, Hyper{}},
        ForwardCase{"float64_decay_maximize_eps_root", at::kDouble, 1e-13, 1e-15,
                    with([](Hyper& h) {
                      h.weight_decay = 0.1;
                      h.maximize = true;
                      h.eps_root = 1e-6;
                      h.step = 1;
                    })},
        ForwardCase{"float32_decay", at::kFloat, 2e-5, 1e-7,
                    with([](Hyper& h) { h.weight_decay = 0.01; })},
        // bfloat16 in, computed in float32, rounded to bfloat16 (8 bits of mantissa).
        ForwardCase{"bfloat16", at::kBFloat16, 1e-2, 1e-3, with([](Hyper& h) { h.eps = 1e-3; })},
        ForwardCase{"float16", at::kHalf, 2e-3, 1e-4, with([](Hyper& h) { h.eps = 1e-3; })}),
    [](const auto& info) { return info.param.name; });

TEST(Adam, StridedViewsMatchContiguous) {
  const Inputs base = random_inputs({4096}, at::kDouble, 2);
  const auto view = [](const Tensor& t) { return t.view({64, 64}).t().slice(0, 0, 64, 2); };
  const Inputs strided{{view(base.g[0])}, {view(base.m[0])}, {view(base.v[0])}, {view(base.p[0])}};
  ASSERT_FALSE(strided.g[0].is_contiguous());
  const Inputs contiguous{{strided.g[0].contiguous()},
                          {strided.m[0].contiguous()},
                          {strided.v[0].contiguous()},
                          {strided.p[0].contiguous()}};
  const Hyper h = with([](Hyper& h) { h.weight_decay = 0.1; });
  const auto [u1, m1, v1] = call_adam(strided, h);
  const auto [u2, m2, v2] = call_adam(contiguous, h);
  EXPECT_TRUE(at::equal(u1[0], u2[0]));
  EXPECT_TRUE(at::equal(m1[0], m2[0]));
  EXPECT_TRUE(at::equal(v1[0], v2[0]));
}

// The gradients of every input and tensor hyperparameter against autograd of
// the plain reference.
TEST(Adam, BackwardMatchesAutogradOfReference) {
  for (const bool maximize : {false, true}) {
    Inputs in = random_inputs({1, 3, 1025, 20000}, at::kDouble, 3);
    for (auto* list : {&in.g, &in.m, &in.v, &in.p}) {
      for (auto& t : *list) t.requires_grad_(true);
    }
    Hyper h = with([&](Hyper& h) {
      h.weight_decay = 0.05;
      h.eps = 1e-3;
      h.eps_root = 1e-6;
      h.maximize = maximize;
    });
    const Tensor lr = scalar(h.lr, true), b1 = scalar(h.beta1, true), b2 = scalar(h.beta2, true),
                 wd = scalar(h.weight_decay, true);
    const auto [update, mu, nu] =
        adam_op(in.g, in.m, in.v, in.p, at::scalar_tensor(h.step, at::kLong), lr, b1, b2, wd, h.eps,
                h.eps_root, h.maximize);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
    TensorVector outputs, ref_outputs, cotangents;
    for (size_t i = 0; i < in.g.size(); ++i) {
      const Ref r = reference_adam(in.g[i], in.m[i], in.v[i], in.p[i], lr, b1, b2, wd, h);
      for (const auto& [out, ref] :
           {std::pair{update[i], r.update}, std::pair{mu[i], r.mu}, std::pair{nu[i], r.nu}}) {
        outputs.push_back(out);
        ref_outputs.push_back(ref);
        cotangents.push_back(at::randn(out.sizes(), gen, kF64));
      }
    }
    TensorVector inputs;
    for (const auto* list : {&in.g, &in.m, &in.v, &in.p}) {
      inputs.insert(inputs.end(), list->begin(), list->end());
    }
    inputs.insert(inputs.end(), {lr, b1, b2, wd});
    const auto fused = torch::autograd::grad(outputs, inputs, cotangents);
    const auto expected = torch::autograd::grad(ref_outputs, inputs, cotangents);
    for (size_t i = 0; i < inputs.size(); ++i) {
      expect_close(fused[i], expected[i], 1e-11, 1e-13, "gradient " + std::to_string(i));
    }
  }
}

// Where g' = mu = nu = 0 and eps_root = 0, plain autograd meets sqrt'(0) (NaN);
// the exact derivative is finite: u = -lr/bc1 (1-b1) g' / (sqrt((1-b2)/bc2) |g'| + eps),
// so du/dg' = -lr/bc1 (1-b1) / eps there, and nu' does not matter where mu' = 0.
TEST(Adam, ExactWhereSecondMomentIsZero) {
  Inputs in = random_inputs({8}, at::kDouble, 5);
  for (auto* list : {&in.g, &in.m, &in.v}) (*list)[0].narrow(0, 0, 4).zero_();
  for (auto* list : {&in.g, &in.m, &in.v}) (*list)[0].requires_grad_(true);
  const Hyper h = with([](Hyper& h) { h.step = 1; });
  const auto [update, mu, nu] = call_adam(in, h, /*with_params=*/false);
  const Tensor gu = at::randn({8}, kF64), gm = at::randn({8}, kF64), gv = at::randn({8}, kF64);
  const auto grads =
      torch::autograd::grad({update[0], mu[0], nu[0]}, {in.g[0], in.m[0], in.v[0]}, {gu, gm, gv});
  for (const auto& g : grads) EXPECT_TRUE(at::isfinite(g).all().item<bool>());
  const double bc1 = 1 - std::pow(h.beta1, h.step);
  const Tensor zero_part = gu.narrow(0, 0, 4) * (-h.lr / bc1 * (1 - h.beta1) / h.eps) +
                           gm.narrow(0, 0, 4) * (1 - h.beta1);
  expect_close(grads[0].narrow(0, 0, 4), zero_part, 1e-14, 0, "grad of g where g = 0");
  expect_close(grads[2].narrow(0, 0, 4), gv.narrow(0, 0, 4) * h.beta2, 1e-14, 0,
               "grad of nu where nu' = 0");
}

TEST(Adam, InPlaceStepMatchesOutOfPlace) {
  const Hyper h = with([](Hyper& h) { h.weight_decay = 0.1; });
  const Inputs in = random_inputs({5, 1025}, at::kFloat, 6);
  const auto [update, mu, nu] = call_adam(in, h);
  for (const bool update_params : {true, false}) {
    Inputs copy;
    for (size_t i = 0; i < in.g.size(); ++i) {
      copy.g.push_back(in.g[i].clone());
      copy.m.push_back(in.m[i].clone());
      copy.v.push_back(in.v[i].clone());
      copy.p.push_back(in.p[i].clone());
    }
    adam_inplace_op(copy.p, copy.g, copy.m, copy.v, at::scalar_tensor(h.step, at::kLong),
                    scalar(h.lr), scalar(h.beta1), scalar(h.beta2), scalar(h.weight_decay), h.eps,
                    h.eps_root, h.maximize, update_params);
    for (size_t i = 0; i < in.g.size(); ++i) {
      EXPECT_TRUE(at::equal(update_params ? copy.p[i] : copy.g[i],
                            update_params ? in.p[i] + update[i] : update[i]));
      EXPECT_TRUE(
          at::equal(update_params ? copy.g[i] : copy.p[i], update_params ? in.g[i] : in.p[i]));
      EXPECT_TRUE(at::equal(copy.m[i], mu[i]));
      EXPECT_TRUE(at::equal(copy.v[i], nu[i]));
    }
  }
}

// Three unrolled steps of the C++ API vs the same loop in plain ops.
TEST(Adam, UnrolledMetaGradientMatchesPlainOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const Tensor a = at::randn({6, 4}, gen, kF64), b = at::randn({6}, gen, kF64);
  const Tensor theta0 = at::randn({4}, gen, kF64);
  const Tensor phi0 = at::randn({4}, gen, kF64);
  const Hyper h = with([](Hyper& h) {
    h.lr = 0.1;
    h.weight_decay = 0.01;
  });
  const auto inner_grad = [&](const Tensor& theta, const Tensor& phi) {
    const Tensor loss = (at::mv(a, theta) - b).square().sum() + (theta - phi).square().sum();
    return torch::autograd::grad({loss}, {theta}, {}, /*retain_graph=*/true,
                                 /*create_graph=*/true)[0];
  };
  const auto outer = [](const Tensor& theta) { return theta.pow(3).sum(); };

  const Tensor phi = phi0.clone().requires_grad_(true);
  unrollopt::Adam adam({.lr = h.lr,
                        .beta1 = h.beta1,
                        .beta2 = h.beta2,
                        .eps = h.eps,
                        .weight_decay = h.weight_decay});
  TensorVector params{theta0.clone().requires_grad_(true)};
  auto state = adam.init(params);
  for (int k = 0; k < 3; ++k) {
    const TensorVector grads{inner_grad(params[0], phi)};
    TensorVector updates;
    std::tie(updates, state) = adam.update(grads, state, params);
    params = unrollopt::apply_updates(params, updates);
  }
  const Tensor meta = torch::autograd::grad({outer(params[0])}, {phi})[0];

  const Tensor phi_ref = phi0.clone().requires_grad_(true);
  Tensor theta = theta0.clone().requires_grad_(true);
  Tensor m = at::zeros({4}, kF64), v = at::zeros({4}, kF64);
  for (int k = 1; k <= 3; ++k) {
    Hyper hk = h;
    hk.step = k;
    const Ref r = reference_adam(inner_grad(theta, phi_ref), m, v, theta, scalar(h.lr),
                                 scalar(h.beta1), scalar(h.beta2), scalar(h.weight_decay), hk);
    theta = theta + r.update;
    m = r.mu;
    v = r.nu;
  }
  const Tensor meta_ref = torch::autograd::grad({outer(theta)}, {phi_ref})[0];
  expect_close(params[0], theta, 1e-12, 0, "parameters after 3 steps");
  expect_close(meta, meta_ref, 1e-10, 0, "meta-gradient");
  EXPECT_EQ(state.count.item<int64_t>(), 3);
}

TEST(Adam, BadInputRaisesBeforeAnythingChanges) {
  Inputs in = random_inputs({3, 4}, at::kFloat, 8);
  const TensorVector before{in.p[0].clone(), in.m[0].clone(), in.v[0].clone(), in.g[0].clone()};
  const auto inplace = [&](const Inputs& x) {
    adam_inplace_op(x.p, x.g, x.m, x.v, at::scalar_tensor(1.0, kF64), scalar(0.1), scalar(0.9),
                    scalar(0.999), scalar(0.0), 1e-8, 0.0, false, true);
  };
  Inputs bad_shape = in;
  bad_shape.m[1] = at::zeros({5});
  EXPECT_THROW(inplace(bad_shape), c10::ValueError);
  Inputs bad_dtype = in;
  bad_dtype.v[1] = bad_dtype.v[1].to(at::kDouble);
  EXPECT_THROW(inplace(bad_dtype), c10::TypeError);
  Inputs bad_count = in;
  bad_count.m.pop_back();
  EXPECT_THROW(inplace(bad_count), c10::ValueError);
  Inputs integer = in;
  integer.g[1] = at::ones({4}, at::kLong);
  integer.p[1] = at::ones({4}, at::kLong);
  EXPECT_THROW(inplace(integer), c10::TypeError);
  EXPECT_TRUE(at::equal(in.p[0], before[0]));
  EXPECT_TRUE(at::equal(in.m[0], before[1]));
  EXPECT_TRUE(at::equal(in.v[0], before[2]));
  EXPECT_TRUE(at::equal(in.g[0], before[3]));

  EXPECT_THROW(unrollopt::Adam({.lr = -1.0}), c10::ValueError);
  EXPECT_THROW(unrollopt::Adam({.beta1 = 1.0}), c10::ValueError);
  EXPECT_THROW(unrollopt::Adam({.beta2 = -0.1}), c10::ValueError);
  EXPECT_THROW(unrollopt::Adam({.eps = -1e-8}), c10::ValueError);
  EXPECT_THROW(unrollopt::Adam({.eps_root = -1.0}), c10::ValueError);
  EXPECT_THROW(unrollopt::Adam({.weight_decay = -0.1}), c10::ValueError);
}

TEST(Adam, StepBelowOneIsRefused) {
  const Inputs in = random_inputs({3}, at::kFloat, 11);
  for (const int64_t step : {0, -2}) {
    EXPECT_THROW(adam_op(in.g, in.m, in.v, in.p, at::scalar_tensor(step, at::kLong), scalar(0.1),
                         scalar(0.9), scalar(0.999), scalar(0.0), 1e-8, 0.0, false),
                 c10::ValueError)
        << "step " << step;
    EXPECT_THROW(
        adam_inplace_op(in.p, in.g, in.m, in.v, at::scalar_tensor(step, at::kLong), scalar(0.1),
                        scalar(0.9), scalar(0.999), scalar(0.0), 1e-8, 0.0, false, true),
        c10::ValueError)
        << "step " << step;
  }
}

TEST(Ops, UnknownOptimizerNameListsTheOperators) {
  std::string message;
  try {
    unrollopt::ops::fused_step("adamm", {}, {}, {}, at::scalar_tensor(1, at::kLong), {}, {});
  } catch (const c10::ValueError& e) {
    message = e.what_without_backtrace();
  }
  EXPECT_NE(message.find("no optimizer named \"adamm\""), std::string::npos) << message;
  EXPECT_NE(message.find("adadelta, adagrad, adam, adam_amsgrad, adamax"), std::string::npos)
      << message;
  EXPECT_NE(message.find("sgd_momentum"), std::string::npos) << message;
  EXPECT_EQ(message.find("backward"), std::string::npos) << message;
}

TEST(Adam, InPlaceArgumentsThatShareMemoryAreRefused) {
  const Inputs in = random_inputs({4, 6}, at::kFloat, 12);
  const Tensor buffer = at::randn({10});
  const auto inplace = [](const Inputs& x) {
    adam_inplace_op(x.p, x.g, x.m, x.v, at::scalar_tensor(1, at::kLong), scalar(0.1), scalar(0.9),
                    scalar(0.999), scalar(0.0), 1e-8, 0.0, false, true);
  };
  const auto message = [&](const Inputs& x) -> std::string {
    try {
      inplace(x);
    } catch (const c10::ValueError& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  Inputs same = in;  // one tensor as both moments
  same.v[1] = same.m[1];
  EXPECT_NE(message(same).find("mu[1] and nu[1] share memory"), std::string::npos) << message(same);
  Inputs views = in;  // overlapping views of one buffer
  views.m[0] = buffer.narrow(0, 0, 4);
  views.v[1] = buffer.narrow(0, 2, 6);
  EXPECT_NE(message(views).find("share memory"), std::string::npos);
  Inputs read = in;  // a gradient that is a written moment
  read.g[0] = read.m[0];
  EXPECT_NE(message(read).find("share memory"), std::string::npos);
  // Disjoint views of one buffer, and interleaved ones, are fine.
  Inputs disjoint = in;
  disjoint.m[0] = buffer.narrow(0, 0, 4);
  disjoint.v[0] = buffer.narrow(0, 4, 4);
  EXPECT_NO_THROW(inplace(disjoint));
  const Tensor pairs = at::randn({6, 2});
  Inputs interleaved = in;
  interleaved.m[1] = pairs.select(1, 0);
  interleaved.v[1] = pairs.select(1, 1).abs();
  EXPECT_NO_THROW(inplace(interleaved));
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

TEST(Adam, NonFiniteGradientsPropagate) {
  Inputs in = random_inputs({6}, at::kDouble, 9);
  in.g[0][1] = std::numeric_limits<double>::quiet_NaN();
  in.g[0][2] = std::numeric_limits<double>::infinity();
  const auto [update, mu, nu] = call_adam(in, Hyper{});
  EXPECT_TRUE(std::isnan(update[0][1].item<double>()));
  EXPECT_FALSE(std::isfinite(mu[0][2].item<double>()));
  EXPECT_TRUE(at::isfinite(update[0].narrow(0, 3, 3)).all().item<bool>());
}

TEST(Adam, ResultsDoNotDependOnThreadCount) {
  Inputs in = random_inputs({1 << 18}, at::kFloat, 11);
  const Tensor lr = scalar(0.01, true);
  const auto run = [&](int threads) {
    at::set_num_threads(threads);
    const auto [update, mu, nu] =
        adam_op(in.g, in.m, in.v, in.p, at::scalar_tensor(2, at::kLong), lr, scalar(0.9),
                scalar(0.999), scalar(0.01), 1e-8, 0.0, false);
    const Tensor grad_lr = torch::autograd::grad({update[0].sum()}, {lr})[0];
    return std::pair{update[0], grad_lr};
  };
  const int threads = at::get_num_threads();
  const auto one = run(1);
  const auto two = run(2);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one.first, two.first));
  EXPECT_TRUE(at::equal(one.second, two.second));
}

TEST(Info, AcceleratedOpAvailable) {
  EXPECT_TRUE(unrollopt::accelerated_op_available(c10::Device("cpu")));
  EXPECT_TRUE(unrollopt::accelerated_op_available(c10::Device("meta")));  // shapes only
  EXPECT_FALSE(unrollopt::accelerated_op_available(c10::Device("mps")));
  EXPECT_STREQ(unrollopt::version(), UNROLLOPT_TEST_VERSION);
}

}  // namespace
