#pragma once
// What every optimizer rule provides; see rules/adam.h for a complete one.
//
// A rule is a struct with
//   name                      the operator's name ("adam": unrollopt::adam, adam_, adam_backward)
//   states                    names of its per-parameter state tensors
//   hyperparameters           names of its hyperparameters (0-d tensors, differentiable)
//   struct Options            its non-differentiable options: their names (numbers
//                             first, then num_flags flags: float and bool in the
//                             operators' schemas), read from a list of numbers
//   enum { ..., num_coef }    the coefficients of one step
//   coef<S>(hyper, step, options) -> std::array<S, num_coef>
//       the coefficients from the hyperparameters and the step number (counting
//       from 1), for S = double and math::Dual (over double and 0-d tensors)
//   forward<V>(g, states, p, coef) -> std::array<V, 1 + num_states>
//       the update and the new states, element-wise
//   vjp<V>(g_update, g_states, g, states, p, coef) -> Vjp<V, ...>
//       the exact vector-Jacobian product: cotangents of g, the states, p and of
//       every coefficient (summed by the caller, then chained to the
//       hyperparameters through the derivative of coef)
// and, where the step reads a running product of its own (NAdam's product of
// momentum coefficients), which the caller keeps and passes as one of the
// hyperparameters:
//   scalar                    ScalarState{name, initial}: that hyperparameter, and
//                             its value before the first step
//   scalar_factor<S>(hyper, step, options) -> S
//       what step `step` multiplies it by (the operator NAME_next_<name>: the
//       product after the step, multiplied in its own dtype, as torch.optim does)
// A rule that takes the root of a mean of squares takes it with take_root
// (below) in both functions, so that squares that underflowed do not make the
// derivative infinite, nor a root that the update does not depend on make it NaN.

#include <array>
#include <utility>

#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include "math_ops.h"

namespace unrollopt::rules {

struct ScalarState {
  const char* name;
  double initial;
};

template <class V, size_t NumStates, size_t NumCoef>
struct Vjp {
  V g;
  std::array<V, NumStates> states;
  V p;
  std::array<V, NumCoef> coef;
};

// The inputs of a mean of squares, scaled by a power of two S (math::upscale)
// where `tiny` is below the smallest normal number, so that the mean computed
// from them is S^2 times the true one there, and as they are elsewhere.
template <class V>
struct Upscaled {
  V like;  // the values (their type gives S)
  decltype(math::below_normal(std::declval<V>())) tiny;
  // (S x)^2 for a number x.
  UNROLLOPT_INLINE V square(const V& x) const {
    return math::square(math::select(tiny, math::upscale(like, x), x));
  }
  // S^2 s for a mean of squares s (or a constant added to one).
  UNROLLOPT_INLINE V squares(const V& s) const {
    return math::select(tiny, math::upscale(like, math::upscale(like, s)), s);
  }
};

// sqrt(w) for a mean of squares w, for the vector-Jacobian products: where
// `tiny` (w, or a mean of squares w is computed from) is below the smallest
// normal number, squares may have underflowed (float32: g^2 for |g| < 1e-19,
// so that w = 0 where the true w is 1e-47), and 1 / (2 sqrt(w)), the derivative,
// is wrong or infinite. There the root is recomputed from the inputs scaled by
// S, sqrt(mean(Upscaled)) / S with mean computing S^2 w, and is exact to
// rounding. Elsewhere it is the root of the mean computed unscaled, as the
// rule computes w. (Few operations, the mask computed once and each input
// selected once: torch.compile inlines the root into each of its uses.)
template <class V, class F>
UNROLLOPT_INLINE V root_of_mean_square(const V& tiny, const F& mean) {
  const Upscaled<V> up{tiny, math::below_normal(tiny)};
  return math::sqrt(mean(up)) *
         math::select(up.tiny, math::downscale_factor(tiny), math::constant(tiny, 1.0));
}

// The cotangent of w from that of its root q = sqrt(w): g_q / (2 q) (q read
// once: torch.compile inlines q, a root, into each of its uses).
template <class V>
UNROLLOPT_INLINE V through_root(const V& g_q, const V& q) {
  return g_q / (math::constant(q, 2.0) * q);
}

// The two functions of a rule (above) that take a root.
enum class Pass { forward, vjp };

// The root of a mean of squares w, as a rule takes it in both functions
// (written once, in a function of the rule's own that gives the arguments):
// - in its vjp: root_of_mean_square(tiny, mean);
// - in its forward, on numbers (the kernels, which nothing differentiates): sqrt(w);
// - in its forward on tensors (the composite step: the plain path, which autograd
//   differentiates): the same value, with the derivatives the vjp has: 0 where
//   `live` is 0 (the update multiplies `live` by a function of the root there,
//   so it does not depend on w; plain sqrt'(0) would make 0 * inf = NaN), and
//   root_of_mean_square's where squares underflowed (math::differentiable_root).
template <Pass P, class V, class F>
UNROLLOPT_INLINE V take_root(const V& w, const V& live, const V& tiny, const F& mean) {
  if constexpr (P == Pass::vjp) {
    return root_of_mean_square(tiny, mean);
  } else if constexpr (std::is_same_v<V, at::Tensor>) {
    return math::differentiable_root(w, live, tiny, [&] {
      // 1 where `live` is 0 (a root whose derivative is finite, and not used).
      return root_of_mean_square(
          tiny, [&](const Upscaled<V>& up) { return math::where_zero(live, 1.0, mean(up)); });
    });
  } else {
    return math::sqrt(w);
  }
}

// The root of a second moment nu' = beta2 nu + (1 - beta2) g'^2 (RAdam's and
// NAdam's; Adam's adds eps_root and AMSGrad), recomputed where it underflowed
// from the old moment `nu` and the decayed gradient `gp`: take_root.
template <Pass P, class V, class C>
UNROLLOPT_INLINE V second_moment_root(const V& nu_new, const V& live, const C& beta2,
                                      const C& one_minus_beta2, const V& nu, const V& gp) {
  return take_root<P>(nu_new, live, nu_new, [&](const Upscaled<V>& up) {
    return math::fmadd(beta2, up.squares(nu), one_minus_beta2 * up.square(gp));
  });
}

// Reads `names.size()` options from the operator's float list.
template <size_t N>
std::array<double, N> read_options(const char* op, c10::ArrayRef<double> values,
                                   const std::array<const char*, N>& names) {
  TORCH_CHECK_VALUE(values.size() == N, "unrollopt.", op, ": options must hold ", N, " values (",
                    c10::Join(", ", names), "), got ", values.size());
  std::array<double, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = values[i];
  return out;
}

// The options of the rules that take an eps and maximize, nothing else
// (Adadelta, Adagrad, Adamax, Adan): a rule's Options derives from it.
struct EpsOptions {
  static constexpr std::array<const char*, 2> names{"eps", "maximize"};
  static constexpr size_t num_flags = 1;
  double eps;
  bool maximize;
  static EpsOptions read(const char* op, c10::ArrayRef<double> values) {
    const auto v = read_options(op, values, names);
    return {v[0], v[1] != 0};
  }
};

// The step's coefficients with their derivatives with respect to the
// hyperparameters (forward-mode differentiation), at the given values and step.
template <class Rule, size_t NH = Rule::hyperparameters.size()>
UNROLLOPT_HOST_DEVICE auto dual_coef(const std::array<double, NH>& hyper, double step,
                                     const typename Rule::Options& options) {
  using D = math::Dual<double, NH>;
  std::array<D, NH> h;
  for (size_t i = 0; i < NH; ++i) h[i] = D::variable(hyper[i], i);
  return Rule::template coef<D>(h, D(step), options);
}

// The hyperparameters' cotangents from those of the step's coefficients
// (summed over elements), through d coef / d hyperparameters.
template <class Rule, size_t NH = Rule::hyperparameters.size(), size_t NC = Rule::num_coef>
UNROLLOPT_HOST_DEVICE std::array<double, NH> chain_to_hyper(const std::array<double, NC>& coef_grad,
                                                            const std::array<double, NH>& hyper,
                                                            double step,
                                                            const typename Rule::Options& options) {
  const auto c = dual_coef<Rule>(hyper, step, options);
  std::array<double, NH> out{};
  for (size_t j = 0; j < NC; ++j) {
    if (coef_grad[j] == 0) continue;  // 0, even where the derivative is not finite
    for (size_t i = 0; i < NH; ++i) out[i] += coef_grad[j] * c[j].grad[i];
  }
  return out;
}

// Which coefficients' cotangents the gradients of the `wanted`
// hyperparameters need: those whose derivative with respect to one of them is
// not 0 here (the others would be multiplied by 0).
template <class Rule, size_t NH = Rule::hyperparameters.size(), size_t NC = Rule::num_coef>
std::array<bool, NC> coef_needed(const std::array<bool, NH>& wanted,
                                 const std::array<double, NH>& hyper, double step,
                                 const typename Rule::Options& options) {
  const auto c = dual_coef<Rule>(hyper, step, options);
  std::array<bool, NC> out{};
  for (size_t j = 0; j < NC; ++j) {
    for (size_t i = 0; i < NH; ++i) out[j] = out[j] || (wanted[i] && c[j].grad[i] != 0);
  }
  return out;
}

}  // namespace unrollopt::rules
