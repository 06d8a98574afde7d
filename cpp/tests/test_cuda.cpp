// The CUDA kernels of the fused operators against the CPU kernels, in float64,
// for every optimizer: forward, in place and backward, over sizes around the
// kernels' vector width, block and chunk, and strided inputs. Skipped, with the
// reason, without a GPU or without CUDA kernels in this build.

#include <gtest/gtest.h>
#include <algorithm>

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "rules_table.h"
#include "testing.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;

// An operator with test values for its arguments, found by name.
struct Optimizer {
  std::string name;
  std::vector<std::string> states;
  std::vector<double> hyper, options;
};

// Every rule of rules/all.h (radam, nadam and the AMSGrad variants too), with
// the test values of rules_table.h: a new rule is tested without being listed here.
std::vector<Optimizer> all_optimizers() {
  std::vector<Optimizer> out;
  for (const auto& r : every_rule()) {
    Optimizer opt{r.name, r.states, {}, test_options(r)};
    for (const auto& h : r.hyperparameters) opt.hyper.push_back(test_value(r.name, h));
    out.push_back(std::move(opt));
  }
  return out;
}

// Empty, and around the vector width (4), a block's (2048) and a chunk's (65536).
const std::vector<int64_t> kSizes = {0, 1, 3, 1025, 2049, 65537};

std::string skip_reason() {
  if (at::detail::getCUDAHooks().getNumGPUs() == 0) return "no CUDA GPU here";
  if (!unrollopt::accelerated_op_available(c10::Device(c10::kCUDA))) {
    return "this build of unrollopt has no CUDA kernels";
  }
  return "";
}

#define SKIP_WITHOUT_CUDA() \
  if (const std::string reason = skip_reason(); !reason.empty()) GTEST_SKIP() << reason

struct Inputs {
  TensorVector grads, states, params, hyper, grad_updates, grad_states;
  Tensor step;
};

// Random float64 inputs on the CPU (normals clamped to 3 sigma); states
// positive (second moments), except rmsprop's grad_avg, |grad_avg| <= 0.9 < 1
// <= square_avg so that the centered variance stays positive.
Inputs make_inputs(const Optimizer& opt, int64_t seed) {
  at::manual_seed(seed);
  const auto make = [&](double scale, double low) {
    TensorVector out;
    for (int64_t n : kSizes) {
      out.push_back(low > 0 ? at::rand({n}, kF64) + low
                            : (scale * at::randn({n}, kF64)).clamp(-3 * scale, 3 * scale));
    }
    return out;
  };
  Inputs in;
  in.grads = make(1, 0);
  const int num_states = static_cast<int>(opt.states.size());
  for (int k = 0; k < num_states; ++k) {
    const TensorVector s = opt.states[k] == "grad_avg" ? make(0.3, 0) : make(1, 1.0);
    in.states.insert(in.states.end(), s.begin(), s.end());
  }
  in.params = make(1, 0);
  in.grad_updates = make(1, 0);
  in.grad_states = make(1, 0);
  for (int k = 1; k < num_states; ++k) {
    const TensorVector s = make(1, 0);
    in.grad_states.insert(in.grad_states.end(), s.begin(), s.end());
  }
  if (num_states == 0) in.grad_states.clear();
  for (double h : opt.hyper) in.hyper.push_back(scalar(h));
  in.step = at::scalar_tensor(3, at::kLong);
  return in;
}

// Copies on `device`; with `strided_layout`, every other element of a larger tensor.
TensorVector to(const TensorVector& ts, const at::Device& device, bool strided_layout = false) {
  TensorVector out;
  for (const auto& t : ts) {
    if (!strided_layout) {
      out.push_back(t.to(device));
      continue;
    }
    const int64_t n = t.numel();
    out.push_back(at::empty({2 * n}, t.options().device(device)).slice(0, 0, 2 * n, 2).copy_(t));
  }
  return out;
}

OptionalTensors optional(const TensorVector& ts) {
  OptionalTensors out;
  for (const auto& t : ts) out.push_back(t);
  return out;
}

void expect_all_close(const TensorVector& actual, const TensorVector& expected, double rtol,
                      double atol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_TRUE(actual[i].is_cuda()) << what << "[" << i << "]";
    expect_close(actual[i].cpu(), expected[i], rtol, atol, what + "[" + std::to_string(i) + "]");
  }
}

void check_matches_cpu(const Optimizer& opt, bool strided_layout) {
  const Inputs in = make_inputs(opt, 7);
  const at::Device gpu(c10::kCUDA);
  // On the GPU: everything, the step and the hyperparameters included.
  const bool st = strided_layout;
  const TensorVector g = to(in.grads, gpu, st), s = to(in.states, gpu, st),
                     p = to(in.params, gpu, st), h = to(in.hyper, gpu),
                     gu = to(in.grad_updates, gpu, st), gs = to(in.grad_states, gpu, st);
  const Tensor step = in.step.to(gpu);
  if (st) ASSERT_FALSE(g.back().is_contiguous());

  const auto [u, ns] = unrollopt::ops::fused_step(opt.name, in.grads, in.states, in.params, in.step,
                                                  in.hyper, opt.options);
  const auto [cu, cns] = unrollopt::ops::fused_step(opt.name, g, s, p, step, h, opt.options);
  expect_all_close(cu, u, 1e-12, 1e-15, opt.name + " update");
  expect_all_close(cns, ns, 1e-12, 1e-15, opt.name + " states");

  c10::List<bool> mask;
  for (size_t i = 0; i < 3 + opt.hyper.size(); ++i) mask.push_back(true);
  const auto back = unrollopt::ops::fused_step_backward(
      opt.name, optional(in.grad_updates), optional(in.grad_states), in.grads, in.states, in.params,
      in.step, in.hyper, opt.options, mask);
  const auto cback = unrollopt::ops::fused_step_backward(opt.name, optional(gu), optional(gs), g, s,
                                                         p, step, h, opt.options, mask);
  expect_all_close(std::get<0>(cback), std::get<0>(back), 1e-12, 1e-15, opt.name + " grad grads");
  expect_all_close(std::get<1>(cback), std::get<1>(back), 1e-12, 1e-15, opt.name + " grad states");
  expect_all_close(std::get<2>(cback), std::get<2>(back), 1e-12, 1e-15, opt.name + " grad params");
  expect_all_close(std::get<3>(cback), std::get<3>(back), 1e-12, 1e-13, opt.name + " grad hyper");

  // In place, into (possibly strided) tensors.
  unrollopt::ops::fused_step_(opt.name, p, g, s, step, h, opt.options, /*update_params=*/true);
  TensorVector expected_p;
  for (size_t i = 0; i < u.size(); ++i) expected_p.push_back(in.params[i] + u[i]);
  expect_all_close(p, expected_p, 1e-12, 1e-15, opt.name + " in-place params");
  expect_all_close(s, ns, 1e-12, 1e-15, opt.name + " in-place states");
}

TEST(Cuda, AcceleratedOpAvailableNeverThrows) {
  const bool gpus = at::detail::getCUDAHooks().getNumGPUs() > 0;
  for (const char* device : {"cuda", "cuda:0", "cuda:7"}) {
    const bool available = unrollopt::accelerated_op_available(c10::Device(device));
    if (!gpus) EXPECT_FALSE(available) << device;
  }
}

// Runs without a GPU: every operator has test values, and they make a finite step.
TEST(Cuda, EveryOperatorHasTestInputs) {
  const auto all = all_optimizers();
  EXPECT_GE(all.size(), 16u);
  for (const auto& opt : all) {
    const Inputs in = make_inputs(opt, 7);
    const auto [u, ns] = unrollopt::ops::fused_step(opt.name, in.grads, in.states, in.params,
                                                    in.step, in.hyper, opt.options);
    for (const auto& t : u) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << opt.name;
    for (const auto& t : ns) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << opt.name;
  }
}

// Runs without a GPU: the dispatcher's CUDA entry of every operator, reached
// from CPU tensors: the CUDA kernel, which refuses them, or, in a build without
// CUDA kernels (a CUDA torch and no toolkit), an error that says why and what to do.
TEST(Cuda, EveryOperatorHasACudaEntry) {
  for (const auto& opt : all_optimizers()) {
    const Inputs in = make_inputs(opt, 3);
    const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(("unrollopt::" + opt.name).c_str(), "");
    // The operator's own arguments: one list per state, one tensor per
    // hyperparameter, a float or a bool per option.
    const auto& d = unrollopt::ops::describe(opt.name);
    const size_t n = in.grads.size();
    torch::jit::Stack stack{in.grads};
    for (size_t k = 0; k < d.states.size(); ++k) {
      stack.emplace_back(at::TensorList(in.states).slice(k * n, n).vec());
    }
    stack.emplace_back(in.params);
    stack.emplace_back(in.step);
    for (const auto& h : in.hyper) stack.emplace_back(h);
    for (size_t i = 0; i < d.options.size(); ++i) {
      const bool flag = std::find(d.flags.begin(), d.flags.end(), d.options[i]) != d.flags.end();
      stack.push_back(flag ? c10::IValue(opt.options[i] != 0) : c10::IValue(opt.options[i]));
    }
    try {
      op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CUDA), &stack);
      ADD_FAILURE() << opt.name << ": no error";
    } catch (const c10::Error& e) {
      const std::string message = e.what_without_backtrace();
      if (UNROLLOPT_TEST_CUDA_KERNELS) {
        EXPECT_NE(message.find("is on a CUDA device but grads are on cpu"), message.npos)
            << message;
      } else {
        EXPECT_NE(message.find("unrollopt::" + opt.name +
                               " on CUDA tensors: this build of unrollopt "
                               "has no CUDA kernels ("),
                  message.npos)
            << message;
        EXPECT_NE(message.find("nvcc"), message.npos) << message;
      }
    }
  }
}

TEST(Cuda, EveryOptimizerMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  for (const auto& opt : all_optimizers()) check_matches_cpu(opt, /*strided_layout=*/false);
}

TEST(Cuda, StridedInputsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  for (const auto& opt : all_optimizers()) check_matches_cpu(opt, /*strided_layout=*/true);
}

}  // namespace
