#pragma once
// What every optimizer rule provides; see rules/adam.h for a complete one.
//
// A rule is a struct with
//   name                      the operator's name ("adam": unrollopt::adam, adam_, adam_backward)
//   states                    names of its per-parameter state tensors
//   hyperparameters           names of its hyperparameters (0-d tensors, differentiable)
//   struct Options            its non-differentiable options, parsed from a float list
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

#include <array>

#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

#include "../math_ops.h"

namespace unrollopt::rules {

template <class V, size_t NumStates, size_t NumCoef>
struct Vjp {
  V g;
  std::array<V, NumStates> states;
  V p;
  std::array<V, NumCoef> coef;
};

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
