#pragma once
// The few non-operator functions the optimizer math needs, for every type it is
// written over: `double` and `float` (per-step coefficients, and the CUDA
// kernels' elements), `Dual<T, N>` (the coefficients' derivatives with respect
// to the hyperparameters), `at::vec::Vectorized<T>` (the fused CPU kernels) and
// `at::Tensor` (the differentiable composite path). With these, each
// optimizer's math is one template shared by all paths.

#include <array>
#include <cfloat>
#include <cmath>
#include <type_traits>

#include <ATen/core/Tensor.h>
#include <c10/util/FunctionRef.h>
#ifndef __CUDACC__
#include <ATen/cpu/vec/vec.h>
#endif

// The element-wise math must inline into the kernels' loops; under nvcc the
// scalar math and the rules are also device code.
#if defined(__CUDACC__)
#define UNROLLOPT_HOST_DEVICE __host__ __device__
#define UNROLLOPT_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define UNROLLOPT_HOST_DEVICE
#define UNROLLOPT_INLINE inline __attribute__((always_inline))
#else
#define UNROLLOPT_HOST_DEVICE
#define UNROLLOPT_INLINE inline
#endif

namespace unrollopt::math {

// Scalars: float and double.
template <class T>
inline constexpr bool is_scalar_v = std::is_floating_point_v<T>;
#define UNROLLOPT_SCALAR_FN(R)                                  \
  template <class T, std::enable_if_t<is_scalar_v<T>, int> = 0> \
  UNROLLOPT_INLINE R

// A constant of the same kind as `like`.
UNROLLOPT_SCALAR_FN(T) constant(T /*like*/, double v) { return static_cast<T>(v); }
// The C functions: the same names in host and device code.
UNROLLOPT_SCALAR_FN(T) sqrt(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return ::sqrtf(x);
  } else {
    return ::sqrt(x);
  }
}
UNROLLOPT_SCALAR_FN(T) reciprocal(T x) { return T(1) / x; }
UNROLLOPT_SCALAR_FN(T) square(T x) { return x * x; }
UNROLLOPT_SCALAR_FN(T) pow(T x, T y) {
  if constexpr (std::is_same_v<T, float>) {
    return ::powf(x, y);
  } else {
    return ::pow(x, y);
  }
}
// x > threshold ? a : b (a choice made per step, e.g. on the step number).
UNROLLOPT_SCALAR_FN(T) if_greater(T x, double threshold, T a, T b) { return x > threshold ? a : b; }
// where(x == 0, a, b)
UNROLLOPT_SCALAR_FN(T) where_zero(T x, double a, T b) { return x == 0 ? static_cast<T>(a) : b; }
// where(a >= b, x, 0): a selection (a NaN in a or b selects 0).
UNROLLOPT_SCALAR_FN(T) where_ge(T a, T b, T x) { return a >= b ? x : T(0); }
// Squares of small numbers underflow (float32: x^2 for |x| < 1e-19), and a
// mean of squares built from them loses its value. `where_tiny` marks where x
// (>= 0) is below the smallest normal number, where its rounding error is no
// longer relative; `upscale` multiplies by a power of two (exactly) that brings
// such values, and their squares, back into range: 2^96 for float (its
// subnormals squared stay normal, and no mean below FLT_MIN overflows when
// scaled by its square), 2^600 for double. The scale is that of `like`'s type
// (the values').
template <class T>
inline constexpr double kUpscale = std::is_same_v<T, float> ? 0x1p96 : 0x1p600;
// Where x < the smallest normal number: a mask for `select`.
UNROLLOPT_SCALAR_FN(bool) below_normal(T x) {
  return x < (std::is_same_v<T, float> ? FLT_MIN : DBL_MIN);
}
UNROLLOPT_SCALAR_FN(T) select(bool mask, T a, T b) { return mask ? a : b; }
template <class T, class X, std::enable_if_t<is_scalar_v<T>, int> = 0>
UNROLLOPT_INLINE X upscale(T /*like*/, X x) {
  return x * static_cast<X>(kUpscale<T>);
}
// 1 / S, which undoes upscale.
UNROLLOPT_SCALAR_FN(T) downscale_factor(T /*like*/) { return static_cast<T>(1 / kUpscale<T>); }
// -1, 0 or 1, and NaN at NaN (where torch.sign gives 0: a NaN must show).
UNROLLOPT_SCALAR_FN(T) sign(T x) { return x != x ? x : T(x > 0) - T(x < 0); }
// 0, of the kind of `like` (a cotangent that is exactly 0, even where `like` is NaN).
UNROLLOPT_SCALAR_FN(T) zeros_like(T /*like*/) { return T(0); }
// a * b + c, fused (one rounding), as in the vector kernels.
UNROLLOPT_SCALAR_FN(T) fmadd(T a, T b, T c) {
  if constexpr (std::is_same_v<T, float>) {
    return ::fmaf(a, b, c);
  } else {
    return ::fma(a, b, c);
  }
}
#undef UNROLLOPT_SCALAR_FN

// Defined in fused_op.cpp, the only place that does arithmetic on tensors.
at::Tensor constant(const at::Tensor& like, double v);
at::Tensor lift(double v);  // a 0-d float64 tensor
at::Tensor sqrt(const at::Tensor& x);
at::Tensor reciprocal(const at::Tensor& x);
at::Tensor square(const at::Tensor& x);  // x * x, the one tensor read once (torch.compile)
at::Tensor pow(const at::Tensor& x, const at::Tensor& y);
at::Tensor where_zero(const at::Tensor& x, double a, const at::Tensor& b);
at::Tensor where_ge(const at::Tensor& a, const at::Tensor& b, const at::Tensor& x);
at::Tensor sign(const at::Tensor& x);
at::Tensor below_normal(const at::Tensor& x);
// where(mask, a, b) in a's dtype (b may be a coefficient, in float64).
at::Tensor select(const at::Tensor& mask, const at::Tensor& a, const at::Tensor& b);
// upscale and downscale_factor: in the dtype of `like` (the values'), also for
// a coefficient.
at::Tensor upscale(const at::Tensor& like, const at::Tensor& x);
at::Tensor downscale_factor(const at::Tensor& like);
at::Tensor fmadd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c);
at::Tensor if_greater(const at::Tensor& x, double threshold, const at::Tensor& a,
                      const at::Tensor& b);
at::Tensor add(const at::Tensor& a, const at::Tensor& b);
at::Tensor mul(const at::Tensor& a, const at::Tensor& b);
at::Tensor zeros_like(const at::Tensor& t);
// The root of a mean of squares w in the plain path's step (rules/rule.h's
// take_root): sqrt(w), with the derivative 0 where `live` is 0 and, where
// `tiny` is below the smallest normal number, the derivative of `exact()`
// (its value there; elsewhere, where live, the same as sqrt(w)).
at::Tensor differentiable_root(const at::Tensor& w, const at::Tensor& live, const at::Tensor& tiny,
                               c10::function_ref<at::Tensor()> exact);

// A number (double, or a 0-d tensor) with its gradient with respect to N
// variables (forward-mode differentiation): how a step's coefficients depend on
// the hyperparameters. In the tensor form the gradients are themselves
// differentiable, and an undefined tensor stands for a zero gradient.
template <class T, size_t N>
struct Dual {
  T value;
  std::array<T, N> grad{};

  // NOLINTNEXTLINE(google-explicit-constructor): constants
  UNROLLOPT_HOST_DEVICE Dual(double v = 0) : value(make(v)) {}
  UNROLLOPT_HOST_DEVICE Dual(T v, std::array<T, N> g) : value(std::move(v)), grad(std::move(g)) {}
  UNROLLOPT_HOST_DEVICE static Dual variable(T v, size_t i) {
    Dual x(std::move(v), {});
    x.grad[i] = make(1);
    return x;
  }

  UNROLLOPT_HOST_DEVICE friend Dual operator+(const Dual& a, const Dual& b) {
    return combine(a.value + b.value, a, make(1), b, make(1));
  }
  UNROLLOPT_HOST_DEVICE friend Dual operator-(const Dual& a, const Dual& b) {
    return combine(a.value - b.value, a, make(1), b, make(-1));
  }
  UNROLLOPT_HOST_DEVICE friend Dual operator*(const Dual& a, const Dual& b) {
    return combine(a.value * b.value, a, b.value, b, a.value);
  }
  UNROLLOPT_HOST_DEVICE friend Dual operator/(const Dual& a, const Dual& b) {
    const T q = a.value / b.value;
    return combine(q, a, math::reciprocal(b.value), b, -q / b.value);
  }
  UNROLLOPT_HOST_DEVICE friend Dual operator-(const Dual& a) {
    return combine(-a.value, a, make(-1), Dual(), make(0));
  }

  // value with gradient da * a.grad + db * b.grad
  UNROLLOPT_HOST_DEVICE static Dual combine(T value, const Dual& a, const T& da, const Dual& b,
                                            const T& db) {
    Dual r(std::move(value), {});
    for (size_t i = 0; i < N; ++i) r.grad[i] = plus(times(da, a.grad[i]), times(db, b.grad[i]));
    return r;
  }

  UNROLLOPT_HOST_DEVICE static T make(double v) {
    if constexpr (std::is_same_v<T, double>) {
      return v;
    } else {
      return math::lift(v);
    }
  }
  UNROLLOPT_HOST_DEVICE static T times(const T& c, const T& g) {
    if constexpr (std::is_same_v<T, double>) {
      return c * g;
    } else {
      return g.defined() ? math::mul(c, g) : T();
    }
  }
  UNROLLOPT_HOST_DEVICE static T plus(const T& a, const T& b) {
    if constexpr (std::is_same_v<T, double>) {
      return a + b;
    } else {
      return !a.defined() ? b : !b.defined() ? a : math::add(a, b);
    }
  }
};

template <class T, size_t N>
UNROLLOPT_HOST_DEVICE Dual<T, N> sqrt(const Dual<T, N>& x) {
  const T s = math::sqrt(x.value);
  return Dual<T, N>::combine(s, x, Dual<T, N>::make(0.5) / s, Dual<T, N>(), Dual<T, N>::make(0));
}
template <class T, size_t N>
UNROLLOPT_HOST_DEVICE Dual<T, N> reciprocal(const Dual<T, N>& x) {
  return Dual<T, N>(1) / x;
}
// x^y with a constant exponent y (the step number).
template <class T, size_t N>
UNROLLOPT_HOST_DEVICE Dual<T, N> pow(const Dual<T, N>& x, const Dual<T, N>& y) {
  const T one = Dual<T, N>::make(1);
  return Dual<T, N>::combine(math::pow(x.value, y.value), x,
                             y.value * math::pow(x.value, y.value - one), Dual<T, N>(),
                             Dual<T, N>::make(0));
}
template <class T, size_t N>
UNROLLOPT_HOST_DEVICE Dual<T, N> constant(const Dual<T, N>& /*like*/, double v) {
  return Dual<T, N>(v);
}
// x > threshold ? a : b, value and gradient (the choice itself is not differentiated).
template <class T, size_t N>
UNROLLOPT_HOST_DEVICE Dual<T, N> if_greater(const Dual<T, N>& x, double threshold,
                                            const Dual<T, N>& a, const Dual<T, N>& b) {
  Dual<T, N> r(math::if_greater(x.value, threshold, a.value, b.value), {});
  for (size_t i = 0; i < N; ++i) {
    if constexpr (std::is_same_v<T, double>) {
      r.grad[i] = math::if_greater(x.value, threshold, a.grad[i], b.grad[i]);
    } else if (a.grad[i].defined() || b.grad[i].defined()) {
      const T& like = a.grad[i].defined() ? a.grad[i] : b.grad[i];
      r.grad[i] = math::if_greater(x.value, threshold,
                                   a.grad[i].defined() ? a.grad[i] : math::zeros_like(like),
                                   b.grad[i].defined() ? b.grad[i] : math::zeros_like(like));
    }
  }
  return r;
}

#ifndef __CUDACC__  // the CPU kernels
template <class T>
at::vec::Vectorized<T> sqrt(const at::vec::Vectorized<T>& x) {
  return x.sqrt();
}
template <class T>
at::vec::Vectorized<T> reciprocal(const at::vec::Vectorized<T>& x) {
  return x.reciprocal();
}
template <class T>
at::vec::Vectorized<T> square(const at::vec::Vectorized<T>& x) {
  return x * x;
}
template <class T>
at::vec::Vectorized<T> where_zero(const at::vec::Vectorized<T>& x, double a,
                                  const at::vec::Vectorized<T>& b) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(b, V(static_cast<T>(a)), x == V(static_cast<T>(0)));
}
// where(a >= b, x, 0): a selection (its derivative with respect to a and b is
// 0; a NaN in a or b selects 0).
template <class T>
at::vec::Vectorized<T> where_ge(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b,
                                const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(V(static_cast<T>(0)), x, a >= b);
}
// a * b + c with one rounding (a fused multiply-add), in every kernel: the
// AVX2 instruction, or std::fma lane by lane in the portable kernels, so that
// both give the same bits (the kernels are compiled with -ffp-contract=off: no
// other multiply-add is fused).
template <class T>
at::vec::Vectorized<T> fmadd(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b,
                             const at::vec::Vectorized<T>& c) {
#if defined(CPU_CAPABILITY_AVX2)
  return at::vec::fmadd(a, b, c);
#else
  using V = at::vec::Vectorized<T>;
  T x[V::size()], y[V::size()], z[V::size()];
  a.store(x);
  b.store(y);
  c.store(z);
  for (int i = 0; i < V::size(); ++i) x[i] = std::fma(x[i], y[i], z[i]);
  return V::loadu(x);
#endif
}
template <class T>
at::vec::Vectorized<T> constant(const at::vec::Vectorized<T>& /*like*/, double v) {
  return at::vec::Vectorized<T>(static_cast<T>(v));
}
template <class T>
at::vec::Vectorized<T> below_normal(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return x < V(std::is_same_v<T, float> ? FLT_MIN : DBL_MIN);
}
template <class T>
at::vec::Vectorized<T> select(const at::vec::Vectorized<T>& mask, const at::vec::Vectorized<T>& a,
                              const at::vec::Vectorized<T>& b) {
  return at::vec::Vectorized<T>::blendv(b, a, mask);
}
template <class T>
at::vec::Vectorized<T> upscale(const at::vec::Vectorized<T>& /*like*/,
                               const at::vec::Vectorized<T>& x) {
  return x * at::vec::Vectorized<T>(static_cast<T>(kUpscale<T>));
}
template <class T>
at::vec::Vectorized<T> downscale_factor(const at::vec::Vectorized<T>& /*like*/) {
  return at::vec::Vectorized<T>(static_cast<T>(1 / kUpscale<T>));
}
template <class T>
at::vec::Vectorized<T> zeros_like(const at::vec::Vectorized<T>& /*like*/) {
  return at::vec::Vectorized<T>(static_cast<T>(0));
}
// -1, 0 or 1, and NaN at NaN.
template <class T>
at::vec::Vectorized<T> sign(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  const V zero(static_cast<T>(0));
  const V s = V::blendv(zero, V(static_cast<T>(1)), x > zero) -
              V::blendv(zero, V(static_cast<T>(1)), x < zero);
  return V::blendv(s, x, x != x);
}

#endif  // __CUDACC__

}  // namespace unrollopt::math

namespace unrollopt {
// A number minus, or divided by, a tensor (the rules' `1 - beta1`), in
// functional operations: ATen's own operators fill a new tensor and subtract or
// divide in place, which torch.compile's tracing of a decomposition (below its
// functionalization) cannot take. The same values. (fused_op.cpp)
at::Tensor operator-(double a, const at::Tensor& b);
at::Tensor operator/(double a, const at::Tensor& b);
}  // namespace unrollopt
