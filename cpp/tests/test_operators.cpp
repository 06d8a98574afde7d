// Every fused operator (one row per rule of rules/all.h) against its reference
// step (reference_steps.h: the documented equations in plain float64 ops), and
// its backward against autograd of that reference; in place against out of
// place; and the operators' input checks.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include "reference_steps.h"
#include "rules_table.h"
#include "testing.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;

// The arguments of one call of an operator. `states` holds the state lists one
// after another, as the operators take them.
struct Args {
  TensorVector grads, states, params, hyper;
  Tensor step;
  std::vector<double> options;

  size_t n() const { return grads.size(); }
  // The i-th tensor's states.
  TensorVector states_of(size_t i) const {
    TensorVector out;
    for (size_t k = 0; k * n() < states.size(); ++k) out.push_back(states[k * n() + i]);
    return out;
  }
};

// Random inputs (float64 normals, rounded to `dtype`); never all zeros. Second
// moments are positive, rmsprop's grad_avg at most 0.9 < 1 <= square_avg (a
// positive centered variance); the signed states (first moments, momentum
// buffers) smaller than the grads.
Args random_args(const RuleRow& r, const std::vector<int64_t>& sizes, at::ScalarType dtype,
                 uint64_t seed, bool flags = true, double step = 3) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto make = [&](const std::string& state) {
    TensorVector out;
    for (int64_t n : sizes) {
      Tensor t;
      if (state == "mu" || state == "momentum_buffer" || state == "grad_avg") {
        t = (0.3 * at::randn({n}, gen, kF64)).clamp(-0.9, 0.9);
      } else if (state == "square_avg") {
        t = at::rand({n}, gen, kF64) + 1;
      } else if (!state.empty()) {
        t = at::rand({n}, gen, kF64) + 0.01;
      } else {
        t = at::randn({n}, gen, kF64);
      }
      out.push_back(t.to(dtype));
    }
    return out;
  };
  Args a;
  a.grads = make("");
  for (const auto& s : r.states) {
    const TensorVector list = make(s);
    a.states.insert(a.states.end(), list.begin(), list.end());
  }
  a.params = make("");
  a.hyper = test_hyper(r);
  a.step = at::scalar_tensor(step, at::kLong);
  a.options = test_options(r, flags);
  return a;
}

std::tuple<TensorVector, TensorVector> fused(const RuleRow& r, const Args& a) {
  return unrollopt::ops::fused_step(r.name, a.grads, a.states, a.params, a.step, a.hyper,
                                    a.options);
}

std::tuple<TensorVector, TensorVector> plain(const RuleRow& r, const Args& a) {
  return unrollopt::ops::plain_step(r.name, a.grads, a.states, a.params, a.step, a.hyper,
                                    a.options);
}

// The two out-of-place steps: the fused operator and its plain twin (NAME_plain,
// the rule in ATen operations, differentiated by autograd).
using StepFn = std::tuple<TensorVector, TensorVector> (*)(const RuleRow&, const Args&);
const std::array<std::pair<const char*, StepFn>, 2> kPaths{{{"fused", &fused}, {"plain", &plain}}};

void fused_inplace(const RuleRow& r, const Args& a, bool update_params) {
  unrollopt::ops::fused_step_(r.name, a.params, a.grads, a.states, a.step, a.hyper, a.options,
                              update_params);
}

// The reference step of the i-th tensor, in float64 (differentiable where the
// arguments require grad).
ReferenceStep reference(const RuleRow& r, const Args& a, size_t i) {
  const auto d = [](const Tensor& t) { return t.to(at::kDouble); };
  TensorVector states;
  for (const auto& s : a.states_of(i)) states.push_back(d(s));
  return reference_step(r.name, r.hyperparameters, r.options, d(a.grads[i]), states,
                        a.params.empty() ? Tensor() : d(a.params[i]), a.hyper, a.options,
                        a.step.item<double>());
}

Args clone(const Args& a) {
  Args out = a;
  for (auto* list : {&out.grads, &out.states, &out.params}) {
    for (auto& t : *list) t = t.clone();
  }
  return out;
}

class EveryRule : public ::testing::TestWithParam<RuleRow> {};
INSTANTIATE_TEST_SUITE_P(Operators, EveryRule, ::testing::ValuesIn(every_rule()),
                         [](const auto& info) { return info.param.name; });

// --- forward ---------------------------------------------------------------------

struct ForwardCase {
  std::string name;
  at::ScalarType dtype;
  double rtol, atol;
  double step;
  bool flags;
};
void PrintTo(const ForwardCase& c, std::ostream* os) { *os << c.name; }

// Tolerances: float64 rounds each of a step's few dozen operations to 2^-53
// (1.1e-16): 1e-14; float32 likewise to 2^-24 (6e-8), 2e-5 leaving room for
// the cancellations of a few (1 - beta, NAdam's two terms, a centered variance). bfloat16 and
// float16 inputs are computed in float32 and the results rounded to 8 and 11
// bits of mantissa (relative 2^-9 = 2e-3 and 2^-12 = 2.4e-4), with the
// absolute tolerance for results near 0.
const std::vector<ForwardCase> kForwardCases = {
    {"float64", at::kDouble, 1e-14, 1e-15, 3, false},
    {"float64_flags_first_step", at::kDouble, 1e-14, 1e-15, 1, true},
    {"float64_flags_step_10", at::kDouble, 1e-14, 1e-15, 10, true},
    {"float32_flags", at::kFloat, 2e-5, 1e-7, 3, true},
    {"bfloat16", at::kBFloat16, 1e-2, 1e-3, 3, true},
    {"float16", at::kHalf, 2e-3, 1e-4, 3, true}};

class Forward : public ::testing::TestWithParam<std::tuple<RuleRow, ForwardCase>> {};
INSTANTIATE_TEST_SUITE_P(Operators, Forward,
                         ::testing::Combine(::testing::ValuesIn(every_rule()),
                                            ::testing::ValuesIn(kForwardCases)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
                         });

TEST_P(Forward, MatchesFloat64Reference) {
  const auto& [r, c] = GetParam();
  const Args a = random_args(r, {0, 1, 3, 1025, 2049, 65537}, c.dtype, 1, c.flags, c.step);
  for (const auto& [path, step] : kPaths) {
    SCOPED_TRACE(path);
    const auto [update, states] = step(r, a);
    ASSERT_EQ(update.size(), a.n());
    ASSERT_EQ(states.size(), a.states.size());
    for (size_t i = 0; i < a.n(); ++i) {
      const ReferenceStep ref = reference(r, a, i);
      EXPECT_EQ(update[i].scalar_type(), c.dtype);
      if (ref.decided.defined()) {  // compared where rounding cannot decide it
        EXPECT_LE(ref.decided.logical_not().sum().item<int64_t>(), update[i].numel() / 100);
        expect_close(update[i].masked_select(ref.decided), ref.update.masked_select(ref.decided),
                     c.rtol, c.atol, "update " + std::to_string(i));
      } else {
        expect_close(update[i], ref.update, c.rtol, c.atol, "update " + std::to_string(i));
      }
      for (size_t k = 0; k < r.states.size(); ++k) {
        expect_close(states[k * a.n() + i], ref.states[k], c.rtol, c.atol,
                     r.states[k] + " " + std::to_string(i));
      }
    }
  }
}

TEST_P(EveryRule, StridedViewsMatchContiguous) {
  const RuleRow& r = GetParam();
  const Args base = random_args(r, {4096}, at::kDouble, 2);
  const auto view = [](const Tensor& t) { return t.view({64, 64}).t().slice(0, 0, 64, 2); };
  Args strided = base, contiguous = base;
  for (auto* list : {&strided.grads, &strided.states, &strided.params}) {
    for (auto& t : *list) t = view(t);
  }
  ASSERT_FALSE(strided.grads[0].is_contiguous());
  for (auto [from, to] : {std::pair{&strided.grads, &contiguous.grads},
                          std::pair{&strided.states, &contiguous.states},
                          std::pair{&strided.params, &contiguous.params}}) {
    for (size_t i = 0; i < from->size(); ++i) (*to)[i] = (*from)[i].contiguous();
  }
  const auto [u1, s1] = fused(r, strided);
  const auto [u2, s2] = fused(r, contiguous);
  EXPECT_TRUE(at::equal(u1[0], u2[0]));
  for (size_t k = 0; k < s1.size(); ++k) EXPECT_TRUE(at::equal(s1[k], s2[k])) << r.states[k];
}

TEST_P(EveryRule, NonFiniteGradientsPropagate) {
  const RuleRow& r = GetParam();
  Args a = random_args(r, {6}, at::kDouble, 9, /*flags=*/false);
  a.grads[0][1] = std::numeric_limits<double>::quiet_NaN();
  a.grads[0][2] = std::numeric_limits<double>::infinity();
  for (const auto& [path, step] : kPaths) {
    SCOPED_TRACE(path);
    const auto [update, states] = step(r, a);
    EXPECT_TRUE(std::isnan(update[0][1].item<double>()));
    // The first state (the update, without states) takes the infinity.
    const Tensor& first = states.empty() ? update[0] : states[0];
    EXPECT_FALSE(std::isfinite(first[2].item<double>()));
    EXPECT_TRUE(at::isfinite(update[0].narrow(0, 3, 3)).all().item<bool>());
  }
}

TEST_P(EveryRule, ResultsDoNotDependOnThreadCount) {
  const RuleRow& r = GetParam();
  Args a = random_args(r, {1 << 18}, at::kFloat, 11);
  a.step = at::scalar_tensor(2, at::kLong);
  a.hyper[0].requires_grad_(true);  // lr
  const auto run = [&](int threads) {
    at::set_num_threads(threads);
    const auto [update, states] = fused(r, a);
    const Tensor grad_lr = torch::autograd::grad({update[0].sum()}, {a.hyper[0]})[0];
    return std::pair{update[0], grad_lr};
  };
  const int threads = at::get_num_threads();
  const auto one = run(1);
  const auto two = run(2);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one.first, two.first));
  EXPECT_TRUE(at::equal(one.second, two.second));
}

// --- backward --------------------------------------------------------------------

struct BackwardCase {
  std::string name;
  double step;
  bool flags;
};
void PrintTo(const BackwardCase& c, std::ostream* os) { *os << c.name; }

// The first step (SGD's momentum starts from the gradient), a later one, and
// one where RAdam rectifies (beta2 = 0.9: from step 6 on).
const std::vector<BackwardCase> kBackwardCases = {{"step_3", 3, false},
                                                  {"first_step", 1, false},
                                                  {"flags_first_step", 1, true},
                                                  {"flags_step_10", 10, true}};

class Backward : public ::testing::TestWithParam<std::tuple<RuleRow, BackwardCase>> {};
INSTANTIATE_TEST_SUITE_P(Operators, Backward,
                         ::testing::Combine(::testing::ValuesIn(every_rule()),
                                            ::testing::ValuesIn(kBackwardCases)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
                         });

// The gradients of every input and hyperparameter against autograd of the
// reference, in float64. A tensor's come from a few dozen roundings (2^-53 =
// 1.1e-16 each) per element: 1e-12. A hyperparameter's is a sum over all
// 21029 elements of terms of either sign, |sum| about sum|terms| / sqrt(n), so
// its rounding, about 1.1e-16 log2(n) sum|terms|, is about 1.1e-16 * 15 * 145
// = 2.4e-13 of it: 1e-11.
TEST_P(Backward, MatchesAutogradOfReference) {
  const auto& [r, c] = GetParam();
  Args a = random_args(r, {1, 3, 1025, 20000}, at::kDouble, 3, c.flags, c.step);
  TensorVector inputs;
  for (auto* list : {&a.grads, &a.states, &a.params, &a.hyper}) {
    for (auto& t : *list) inputs.push_back(t.requires_grad_(true));
  }
  for (const auto& [path, step] : kPaths) {
    SCOPED_TRACE(path);
    const auto [update, states] = step(r, a);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
    TensorVector outputs, expected, cotangents;
    for (size_t i = 0; i < a.n(); ++i) {
      const ReferenceStep ref = reference(r, a, i);
      outputs.push_back(update[i]);
      expected.push_back(ref.update);
      for (size_t k = 0; k < r.states.size(); ++k) {
        outputs.push_back(states[k * a.n() + i]);
        expected.push_back(ref.states[k]);
      }
    }
    for (const auto& out : outputs) cotangents.push_back(at::randn(out.sizes(), gen, kF64));
    const auto got = torch::autograd::grad(outputs, inputs, cotangents, true, false, true);
    const auto want = torch::autograd::grad(expected, inputs, cotangents, true, false, true);
    for (size_t i = 0; i < inputs.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << "gradient " << i;
      const Tensor w = want[i].defined() ? want[i] : at::zeros_like(inputs[i]);
      const bool hyper = i >= inputs.size() - a.hyper.size();
      expect_close(got[i], w, hyper ? 1e-11 : 1e-12, 1e-13, "gradient " + std::to_string(i));
    }
  }
}

// Where g' and every state are 0 (and eps_root = 0), plain autograd of most
// steps meets sqrt'(0) (NaN); the exact derivatives are finite.
TEST_P(EveryRule, GradientsFiniteWhereEverythingIsZero) {
  const RuleRow& r = GetParam();
  Args a = random_args(r, {8}, at::kDouble, 5, /*flags=*/false, /*step=*/1);
  a.params.clear();
  a.hyper = test_hyper(r, false, /*weight_decay=*/0.0);
  for (auto* list : {&a.grads, &a.states}) {
    for (auto& t : *list) t.narrow(0, 0, 4).zero_();
  }
  TensorVector inputs;
  for (auto* list : {&a.grads, &a.states}) {
    for (auto& t : *list) inputs.push_back(t.requires_grad_(true));
  }
  for (const auto& [path, step] : kPaths) {
    SCOPED_TRACE(path);
    const auto [update, states] = step(r, a);
    TensorVector outputs{update[0]};
    outputs.insert(outputs.end(), states.begin(), states.end());
    TensorVector cotangents;
    for (const auto& out : outputs) cotangents.push_back(at::randn(out.sizes(), kF64));
    const auto grads = torch::autograd::grad(outputs, inputs, cotangents, true, false, true);
    ASSERT_TRUE(grads[0].defined()) << "the gradient of grads";
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) EXPECT_TRUE(at::isfinite(grads[i]).all().item<bool>()) << i;
    }
  }
}

// Adam there: u = -lr/bc1 (1-b1) g' / (sqrt((1-b2)/bc2) |g'| + eps), so
// du/dg' = -lr/bc1 (1-b1) / eps, and nu' does not matter where mu' = 0.
TEST(Adam, ExactWhereSecondMomentIsZero) {
  const RuleRow r = rule_named("adam");
  Args a = random_args(r, {8}, at::kDouble, 5, /*flags=*/false, /*step=*/1);
  a.params.clear();
  a.hyper = test_hyper(r, false, /*weight_decay=*/0.0);
  for (auto* list : {&a.grads, &a.states}) {
    for (auto& t : *list) t.narrow(0, 0, 4).zero_();
    for (auto& t : *list) t.requires_grad_(true);
  }
  for (const auto& [path, step] : kPaths) {
    SCOPED_TRACE(path);
    const auto [update, states] = step(r, a);
    const Tensor gu = at::randn({8}, kF64), gm = at::randn({8}, kF64), gv = at::randn({8}, kF64);
    const auto grads = torch::autograd::grad({update[0], states[0], states[1]},
                                             {a.grads[0], a.states[0], a.states[1]}, {gu, gm, gv});
    for (const auto& g : grads) EXPECT_TRUE(at::isfinite(g).all().item<bool>());
    const double lr = test_value("adam", "lr"), beta1 = test_value("adam", "beta1"),
                 beta2 = test_value("adam", "beta2"), eps = test_value("adam", "eps");
    const double bc1 = 1 - beta1;  // step 1
    const Tensor zero_part =
        gu.narrow(0, 0, 4) * (-lr / bc1 * (1 - beta1) / eps) + gm.narrow(0, 0, 4) * (1 - beta1);
    expect_close(grads[0].narrow(0, 0, 4), zero_part, 1e-14, 0, "grad of g where g = 0");
    expect_close(grads[2].narrow(0, 0, 4), gv.narrow(0, 0, 4) * beta2, 1e-14, 0,
                 "grad of nu where nu' = 0");
  }
}

// Three unrolled steps on a quadratic, the gradients with create_graph: the
// parameters and the meta-gradients (of a parameter of the inner loss and of
// every hyperparameter) against the same loop of reference steps.
TEST_P(EveryRule, UnrolledMetaGradientMatchesReference) {
  const RuleRow& r = GetParam();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const Tensor m = at::randn({6, 4}, gen, kF64), b = at::randn({6}, gen, kF64);
  const Tensor theta0 = at::randn({4}, gen, kF64), phi0 = at::randn({4}, gen, kF64);
  const auto inner_grad = [&](const Tensor& theta, const Tensor& phi) {
    const Tensor loss = (at::mv(m, theta) - b).square().sum() + (theta - phi).square().sum();
    return torch::autograd::grad({loss}, {theta}, {}, true, /*create_graph=*/true)[0];
  };
  const TensorVector hyper = test_hyper(r, /*requires_grad=*/true);
  const std::vector<double> options = test_options(r);
  // path: "reference", "fused" or "plain".
  const auto unroll = [&](std::string_view path) {
    const Tensor phi = phi0.clone().requires_grad_(true);
    Tensor theta = theta0.clone().requires_grad_(true);
    TensorVector states;
    for (size_t k = 0; k < r.states.size(); ++k) states.push_back(at::zeros({4}, kF64));
    for (int k = 1; k <= 3; ++k) {
      const Tensor g = inner_grad(theta, phi);
      if (path == "reference") {
        auto step = reference_step(r.name, r.hyperparameters, r.options, g, states, theta, hyper,
                                   options, k);
        theta = theta + step.update;
        states = step.states;
      } else {
        const auto op = path == "fused" ? &unrollopt::ops::fused_step : &unrollopt::ops::plain_step;
        auto [u, s] =
            op(r.name, {g}, states, {theta}, at::scalar_tensor(k, at::kLong), hyper, options);
        theta = theta + u[0];
        states = s;
      }
    }
    TensorVector wrt{phi};
    wrt.insert(wrt.end(), hyper.begin(), hyper.end());
    TensorVector out{theta.detach()};
    for (const auto& grad : torch::autograd::grad({theta.pow(3).sum()}, wrt, {}, true, false, true))
      out.push_back(grad.defined() ? grad : at::zeros({}, kF64));
    return out;
  };
  const TensorVector expected = unroll("reference");
  for (const char* path : {"fused", "plain"}) {
    SCOPED_TRACE(path);
    const TensorVector got = unroll(path);
    expect_close(got[0], expected[0], 1e-12, 0, "parameters after 3 steps");
    for (const auto& t : got) EXPECT_TRUE(at::isfinite(t).all().item<bool>());
    // Every step scales with lr; Lion's depends on the gradients only through a
    // sign, so its meta-gradient of phi is 0.
    EXPECT_NE(got[2].item<double>(), 0) << "gradient of lr";
    if (r.name != "lion") EXPECT_GT(got[1].abs().max().item<double>(), 0) << "meta-gradient";
    for (size_t i = 1; i < got.size(); ++i) {
      const std::string what = i == 1 ? "meta-gradient" : "gradient of " + r.hyperparameters[i - 2];
      expect_close(got[i], expected[i], 1e-10, 1e-14, what);
    }
  }
}

// --- in place ----------------------------------------------------------------------

TEST_P(EveryRule, InPlaceStepMatchesOutOfPlace) {
  const RuleRow& r = GetParam();
  const Args a = random_args(r, {5, 1025}, at::kFloat, 6);
  const auto [update, states] = fused(r, a);
  for (const bool update_params : {true, false}) {
    const Args b = clone(a);
    fused_inplace(r, b, update_params);
    for (size_t i = 0; i < a.n(); ++i) {
      EXPECT_TRUE(at::equal(update_params ? b.params[i] : b.grads[i],
                            update_params ? a.params[i] + update[i] : update[i]));
      EXPECT_TRUE(at::equal(update_params ? b.grads[i] : b.params[i],
                            update_params ? a.grads[i] : a.params[i]));
    }
    for (size_t k = 0; k < states.size(); ++k) EXPECT_TRUE(at::equal(b.states[k], states[k]));
  }
}

// --- input checks ------------------------------------------------------------------

TEST_P(EveryRule, BadInputRaisesBeforeAnythingChanges) {
  const RuleRow& r = GetParam();
  Args a = random_args(r, {3, 4}, at::kFloat, 8);
  a.step = at::scalar_tensor(1.0, kF64);
  const Args before = clone(a);
  // The last list the step writes: a state list or, without states, params.
  const auto last_written = [&](Args& x) -> TensorVector& {
    return x.states.empty() ? x.params : x.states;
  };
  const auto inplace = [&](const Args& x) { fused_inplace(r, x, /*update_params=*/true); };
  Args bad_shape = a;
  last_written(bad_shape)[1] = at::zeros({5});
  EXPECT_THROW(inplace(bad_shape), c10::ValueError);
  Args bad_dtype = a;
  last_written(bad_dtype).back() = last_written(bad_dtype).back().to(at::kDouble);
  EXPECT_THROW(inplace(bad_dtype), c10::TypeError);
  Args bad_count = a;
  last_written(bad_count).pop_back();
  EXPECT_THROW(inplace(bad_count), c10::ValueError);
  Args integer = a;
  integer.grads[1] = at::ones({4}, at::kLong);
  integer.params[1] = at::ones({4}, at::kLong);
  EXPECT_THROW(inplace(integer), c10::TypeError);
  for (auto [now, then] : {std::pair{&a.grads, &before.grads}, std::pair{&a.states, &before.states},
                           std::pair{&a.params, &before.params}}) {
    for (size_t i = 0; i < now->size(); ++i) EXPECT_TRUE(at::equal((*now)[i], (*then)[i]));
  }
}

TEST_P(EveryRule, StepBelowOneIsRefused) {
  const RuleRow& r = GetParam();
  Args a = random_args(r, {3}, at::kFloat, 11);
  for (const int64_t step : {0, -2}) {
    a.step = at::scalar_tensor(step, at::kLong);
    EXPECT_THROW(fused(r, a), c10::ValueError) << "step " << step;
    EXPECT_THROW(fused_inplace(r, a, true), c10::ValueError) << "step " << step;
  }
}

TEST_P(EveryRule, InPlaceArgumentsThatShareMemoryAreRefused) {
  const RuleRow& r = GetParam();
  const Args a = random_args(r, {4, 6}, at::kFloat, 12);
  const size_t n = a.n(), ns = r.states.size();
  const Tensor buffer = at::randn({10});
  const auto message = [&](const Args& x) -> std::string {
    try {
      fused_inplace(r, x, /*update_params=*/true);
    } catch (const c10::ValueError& e) {
      return e.what_without_backtrace();
    }
    return "";
  };
  // The i-th tensor of one of the last two lists the step writes: two state
  // lists, or params and the only state list, or params alone.
  const auto written = [&](Args& x, int which, size_t i) -> Tensor& {
    if (ns >= 2) return x.states[(ns - 2 + which) * n + i];
    if (ns == 1 && which == 0) return x.params[i];
    return ns == 1 ? x.states[i] : x.params[i];
  };
  if (ns >= 2) {  // one tensor as two states
    Args same = a;
    written(same, 1, 1) = written(same, 0, 1);
    const std::string want = r.states[ns - 2] + "[1] and " + r.states[ns - 1] + "[1] share memory";
    EXPECT_NE(message(same).find(want), std::string::npos) << message(same);
  }
  Args views = a;  // overlapping views of one buffer
  written(views, 0, 0) = buffer.narrow(0, 0, 4);
  written(views, 1, 1) = buffer.narrow(0, 2, 6);
  EXPECT_NE(message(views).find("share memory"), std::string::npos);
  Args read = a;  // a gradient that is a written tensor
  read.grads[0] = written(read, 1, 0);
  EXPECT_NE(message(read).find("share memory"), std::string::npos);
  // Disjoint views of one buffer, and interleaved ones, are fine.
  Args disjoint = a;
  written(disjoint, 0, 0) = buffer.narrow(0, 0, 4);
  written(disjoint, 1, 1) = buffer.narrow(0, 4, 6);
  EXPECT_NO_THROW(fused_inplace(r, disjoint, true));
  const Tensor pairs = at::rand({6, 2}) + 1;
  Args interleaved = a;
  if (ns == 0) {  // params alone: its two tensors
    interleaved.params[0] = pairs.select(1, 0).narrow(0, 0, 4);
    interleaved.params[1] = pairs.select(1, 1);
  } else {
    written(interleaved, 0, 1) = pairs.select(1, 0);
    written(interleaved, 1, 1) = pairs.select(1, 1);
  }
  EXPECT_NO_THROW(fused_inplace(r, interleaved, true));
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

TEST(Ops, EveryRuleIsRegistered) {
  std::vector<std::string> rules;
  for (const auto& r : every_rule()) rules.push_back(r.name);
  std::sort(rules.begin(), rules.end());
  EXPECT_EQ(rules, unrollopt::ops::operator_names());
  EXPECT_EQ(rules.size(), 17u);
}

// The operators describe themselves: their schemas carry the rule's names and
// ops::describe reads them back.
TEST(Ops, SchemasCarryTheRulesNames) {
  for (const auto& r : every_rule()) {
    const auto& d = unrollopt::ops::describe(r.name);
    EXPECT_EQ(d.states, r.states) << r.name;
    EXPECT_EQ(d.hyperparameters, r.hyperparameters) << r.name;
    EXPECT_EQ(d.options, r.options) << r.name;
    EXPECT_EQ(d.flags, r.flags) << r.name;
  }
  const auto schema = [](const char* name) {
    return c10::toString(c10::Dispatcher::singleton().findSchemaOrThrow(name, "").schema());
  };
  EXPECT_EQ(schema("unrollopt::adam"),
            "unrollopt::adam(Tensor[] grads, Tensor[] mu, Tensor[] nu, Tensor[] params, "
            "Tensor step, Tensor lr, Tensor beta1, Tensor beta2, Tensor weight_decay, float eps, "
            "float eps_root, bool maximize) -> (Tensor[] updates, Tensor[] mu_out, "
            "Tensor[] nu_out)");
  EXPECT_EQ(schema("unrollopt::sgd_momentum_"),
            "unrollopt::sgd_momentum_(Tensor(a!)[] params, Tensor(b!)[] grads, "
            "Tensor(c!)[] momentum_buffer, Tensor step, Tensor lr, Tensor momentum, "
            "Tensor dampening, Tensor weight_decay, bool maximize, bool nesterov, "
            "bool update_params) -> ()");
  EXPECT_EQ(schema("unrollopt::lion_backward"),
            "unrollopt::lion_backward(Tensor?[] grad_updates, Tensor?[] grad_mu_out, "
            "Tensor[] grads, Tensor[] mu, Tensor[] params, Tensor step, Tensor lr, Tensor beta1, "
            "Tensor beta2, Tensor weight_decay, bool maximize, bool[] output_mask) -> "
            "(Tensor[] grad_grads, Tensor[] grad_mu, Tensor[] grad_params, Tensor grad_lr, "
            "Tensor grad_beta1, Tensor grad_beta2, Tensor grad_weight_decay)");
}

// NAdam's running product, the rule's scalar state: ops::next_scalar (the
// operator nadam_next_mu_product) multiplies the previous value by
// mu_t = beta1 (1 - 0.96^(t psi) / 2) in its own dtype, differentiably; a rule
// without a scalar state has none.
TEST(Ops, NextScalarIsTheRulesRunningProduct) {
  const auto& d = unrollopt::ops::describe("nadam");
  const double beta1 = 0.87, psi = 4e-3, previous = 0.4321;
  const auto index = [&](const std::string& name) {
    return std::find(d.hyperparameters.begin(), d.hyperparameters.end(), name) -
           d.hyperparameters.begin();
  };
  std::vector<at::Tensor> hyper;
  for (const auto& h : d.hyperparameters) {
    const double v = h == "beta1" ? beta1 : h == "mu_product" ? previous : 0.1;
    hyper.push_back(at::scalar_tensor(v, at::kDouble).requires_grad_(h == "beta1"));
  }
  std::vector<double> options;
  for (const auto& o : d.options)
    options.push_back(o == "momentum_decay" ? psi : o == "eps" ? 1e-8 : 0);
  for (const int64_t t : {1, 2, 50}) {
    const double mu = beta1 * (1 - 0.5 * std::pow(0.96, t * psi));
    const at::Tensor next =
        unrollopt::ops::next_scalar("nadam", at::scalar_tensor(t, at::kLong), hyper, options);
    EXPECT_EQ(next.scalar_type(), at::kDouble);
    EXPECT_NEAR(next.item<double>(), previous * mu, 4e-16 * previous * mu) << t;
    // d/dbeta1 of P mu_t = P mu_t / beta1.
    const at::Tensor g = torch::autograd::grad({next}, {hyper[index("beta1")]})[0];
    EXPECT_NEAR(g.item<double>(), previous * mu / beta1, 1e-15) << t;
  }
  std::vector<at::Tensor> single;
  for (const auto& h : hyper) single.push_back(h.detach());
  single[index("mu_product")] = at::scalar_tensor(previous, at::kFloat);  // float32 in and out
  EXPECT_EQ(unrollopt::ops::next_scalar("nadam", at::scalar_tensor(2, at::kLong), single, options)
                .scalar_type(),
            at::kFloat);
  EXPECT_THROW(unrollopt::ops::next_scalar("adam", at::scalar_tensor(1, at::kLong), {}, {}),
               c10::ValueError);
}

TEST(Info, AcceleratedOpAvailable) {
  EXPECT_TRUE(unrollopt::accelerated_op_available(c10::Device("cpu")));
  EXPECT_TRUE(unrollopt::accelerated_op_available(c10::Device("meta")));  // shapes only
  EXPECT_FALSE(unrollopt::accelerated_op_available(c10::Device("mps")));
  EXPECT_STREQ(unrollopt::version(), UNROLLOPT_TEST_VERSION);
}

}  // namespace
