#pragma once
// Helpers shared by the test files.

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace unrollopt::testing {

using at::Tensor;
using TensorVector = std::vector<Tensor>;

inline const at::TensorOptions kF64 = at::TensorOptions().dtype(at::kDouble);

inline Tensor scalar(double v, bool requires_grad = false) {
  return at::scalar_tensor(v, kF64).set_requires_grad(requires_grad);
}

inline void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                         const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  const Tensor err = (a - e).abs() - (atol + rtol * e.abs());
  EXPECT_TRUE(err.numel() == 0 || err.max().item<double>() <= 0)
      << what << ": max abs error " << (a - e).abs().max().item<double>();
}

// Random float64 parameters of the given sizes and a sequence of gradients for them.
struct Problem {
  TensorVector params;
  std::vector<TensorVector> grads;
};
inline Problem problem(uint64_t seed, const std::vector<int64_t>& sizes, int steps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Problem pr;
  for (int64_t n : sizes) pr.params.push_back(at::randn({n}, gen, kF64));
  for (int k = 0; k < steps; ++k) {
    TensorVector g;
    for (const auto& p : pr.params) g.push_back(at::randn(p.sizes(), gen, kF64));
    pr.grads.push_back(std::move(g));
  }
  return pr;
}

// The message of the c10::Error that f throws ("" if none).
inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace unrollopt::testing
