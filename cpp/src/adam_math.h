#pragma once
// Adam's math, written once. `S` is the type of the per-step coefficients
// (double in the fused kernels, 0-d tensors in the composite path) and `V` the
// type the element-wise math runs in (at::vec::Vectorized or at::Tensor).
//
// Forward, with t the step number after increment and sign = -1 when maximizing:
//   g'  = sign * g + weight_decay * p
//   mu' = beta1 * mu + (1 - beta1) * g'
//   nu' = beta2 * nu + (1 - beta2) * g'^2
//   u   = -lr / (1 - beta1^t) * mu' / (sqrt(nu' / (1 - beta2^t) + eps_root) + eps)
// The vector-Jacobian product below is exact for every eps and eps_root,
// including where mu' = 0 (u does not depend on nu' there, so d u / d nu' = 0).

#include "math_ops.h"

namespace unrollopt {

template <class S>
struct AdamCoef {
  S sign, beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, eps;
  S step_size;     // -lr / bc1, bc1 = 1 - beta1^t
  S inv_sqrt_bc2;  // 1 / sqrt(bc2), bc2 = 1 - beta2^t
  S eps_root_bc2;  // eps_root * bc2: sqrt(nu' + eps_root_bc2) / sqrt(bc2) = sqrt(nu'/bc2 + eps_root)
  // Backward only.
  S half_inv_bc2;  // d sqrt(nu'/bc2 + eps_root) / d nu' = half_inv_bc2 / s
  S neg_inv_bc1;   // d u / d lr = neg_inv_bc1 * r
  S dbeta1_bc;     // d u / d beta1 through bc1 = u * dbeta1_bc
  S dbeta2_bc;     // d u / d beta2 through bc2 = u * nu' / (s * d) * dbeta2_bc

  // Converts the coefficients to another arithmetic type (double -> Vectorized).
  template <class T, class F>
  AdamCoef<T> map(F&& f) const {
    return {f(sign),     f(beta1),        f(one_minus_beta1), f(beta2),
            f(one_minus_beta2), f(weight_decay), f(eps),   f(step_size),
            f(inv_sqrt_bc2), f(eps_root_bc2), f(half_inv_bc2), f(neg_inv_bc1),
            f(dbeta1_bc), f(dbeta2_bc)};
  }
};

template <class S>
AdamCoef<S> adam_coef(const S& lr, const S& beta1, const S& beta2, const S& weight_decay,
                      const S& step, double eps, double eps_root, bool maximize) {
  const S bc1 = 1 - math::pow(beta1, step);
  const S bc2 = 1 - math::pow(beta2, step);
  const S step_minus_1 = step - 1;
  return {
      math::constant(lr, maximize ? -1.0 : 1.0),
      beta1,
      1 - beta1,
      beta2,
      1 - beta2,
      weight_decay,
      math::constant(lr, eps),
      /*step_size=*/-lr / bc1,
      /*inv_sqrt_bc2=*/1 / math::sqrt(bc2),
      /*eps_root_bc2=*/eps_root * bc2,
      /*half_inv_bc2=*/0.5 / bc2,
      /*neg_inv_bc1=*/-1 / bc1,
      /*dbeta1_bc=*/step * math::pow(beta1, step_minus_1) / bc1,
      /*dbeta2_bc=*/-step * math::pow(beta2, step_minus_1) * (0.5 / (bc2 * bc2)),
  };
}

template <class V>
struct AdamOut {
  V update, mu, nu;
};

template <class V, class C>
UNROLLOPT_INLINE AdamOut<V> adam_forward(const V& g, const V& mu, const V& nu, const V& p, const C& c) {
  const V gp = c.sign * g + c.weight_decay * p;
  const V mu1 = c.beta1 * mu + c.one_minus_beta1 * gp;
  const V nu1 = c.beta2 * nu + c.one_minus_beta2 * (gp * gp);
  const V d = math::sqrt(nu1 + c.eps_root_bc2) * c.inv_sqrt_bc2 + c.eps;
  return {c.step_size * (mu1 / d), mu1, nu1};
}

// Cotangents of (g, mu, nu, p) and the per-element terms of the hyperparameter
// gradients (to be summed), given the cotangents (gu, gmu, gnu) of the outputs.
template <class V>
struct AdamVjp {
  V g, mu, nu, p;
  V lr, beta1, beta2, weight_decay;
};

template <class V, class C>
UNROLLOPT_INLINE AdamVjp<V> adam_vjp(const V& gu, const V& gmu, const V& gnu, const V& g, const V& mu,
                    const V& nu, const V& p, const C& c) {
  const V gp = c.sign * g + c.weight_decay * p;
  const V mu1 = c.beta1 * mu + c.one_minus_beta1 * gp;
  const V nu1 = c.beta2 * nu + c.one_minus_beta2 * (gp * gp);
  const V s = math::sqrt(nu1 + c.eps_root_bc2) * c.inv_sqrt_bc2;
  const V inv_d = math::reciprocal(s + c.eps);
  const V r = mu1 * inv_d;
  const V u = c.step_size * r;
  // Where mu' = 0, u does not depend on nu' and the terms divided by s are
  // masked; dividing by 1 there keeps their own derivatives finite when s = 0.
  // (Where s = 0 but mu' != 0 the derivative is truly infinite.)
  const V s_safe = math::where_zero(mu1, 1.0, s);
  const V gu_u_over_sd = gu * u * inv_d / s_safe;
  const V gmu1 = gmu + gu * c.step_size * inv_d;
  const V gnu1 = gnu - math::where_zero(mu1, 0.0, gu_u_over_sd * c.half_inv_bc2);
  const V ggp = c.one_minus_beta1 * gmu1 + c.one_minus_beta2 * (gp + gp) * gnu1;
  return {
      c.sign * ggp,
      c.beta1 * gmu1,
      c.beta2 * gnu1,
      c.weight_decay * ggp,
      gu * r * c.neg_inv_bc1,
      gmu1 * (mu - gp) + gu * u * c.dbeta1_bc,
      gnu1 * (nu - gp * gp) + math::where_zero(nu1, 0.0, gu_u_over_sd * nu1) * c.dbeta2_bc,
      ggp * p,
  };
}

}  // namespace unrollopt
