#pragma once
// The few non-operator functions the optimizer math needs, for every type it is
// written over: `double` (per-step coefficients), `at::vec::Vectorized<T>` (the
// fused CPU kernels) and `at::Tensor` (the differentiable composite path).
// With these, each optimizer's math is one template shared by all paths.

#include <cmath>

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

// The element-wise math must inline into the kernels' vector loops.
#if defined(__GNUC__) || defined(__clang__)
#define UNROLLOPT_INLINE inline __attribute__((always_inline))
#else
#define UNROLLOPT_INLINE inline
#endif

namespace unrollopt::math {

// A constant of the same kind as `like`.
inline double constant(double /*like*/, double v) { return v; }
inline double sqrt(double x) { return std::sqrt(x); }
inline double reciprocal(double x) { return 1 / x; }
inline double pow(double x, double y) { return std::pow(x, y); }
// where(x == 0, a, b)
inline double where_zero(double x, double a, double b) { return x == 0 ? a : b; }

template <class T>
at::vec::Vectorized<T> sqrt(const at::vec::Vectorized<T>& x) {
  return x.sqrt();
}
template <class T>
at::vec::Vectorized<T> reciprocal(const at::vec::Vectorized<T>& x) {
  return x.reciprocal();
}
template <class T>
at::vec::Vectorized<T> where_zero(const at::vec::Vectorized<T>& x, double a,
                                  const at::vec::Vectorized<T>& b) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(b, V(static_cast<T>(a)), x == V(static_cast<T>(0)));
}

// Defined in composite.cpp, the only place that does arithmetic on tensors.
at::Tensor constant(const at::Tensor& like, double v);
at::Tensor sqrt(const at::Tensor& x);
at::Tensor reciprocal(const at::Tensor& x);
at::Tensor pow(const at::Tensor& x, const at::Tensor& y);
at::Tensor where_zero(const at::Tensor& x, double a, const at::Tensor& b);

}  // namespace unrollopt::math
