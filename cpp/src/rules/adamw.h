#pragma once
// AdamW (Loshchilov and Hutter, 2019) as torch.optim.AdamW computes it:
// decoupled weight decay, then Adam's step without L2, with optax's eps_root.
// With t the step number and sign = -1 when maximizing:
//   g'  = sign * g
//   mu' = beta1 * mu + (1 - beta1) * g'
//   nu' = beta2 * nu + (1 - beta2) * g'^2
//   u   = -lr * weight_decay * p
//         - lr / (1 - beta1^t) * mu' / (sqrt(nu' / (1 - beta2^t) + eps_root) + eps)
// (torch.optim.AdamW's p <- p * (1 - lr * weight_decay), then the Adam step, is
// p + u). The vector-Jacobian product is exact for every eps and eps_root,
// including where mu' = 0: u does not depend on nu' there, so d u / d nu' = 0
// (the removable 0/0 where plain autograd meets sqrt'(0) at nu' + eps_root = 0).

#include "rule.h"

namespace unrollopt::rules {

struct AdamW {
  static constexpr const char* name = "adamw";
  static constexpr std::array<const char*, 2> states{"mu", "nu"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "beta1", "beta2",
                                                               "weight_decay"};
  struct Options {
    static constexpr std::array<const char*, 3> names{"eps", "eps_root", "maximize"};
    double eps, eps_root;
    bool maximize;
    static Options read(c10::ArrayRef<double> values) {
      const auto v = read_options(name, values, names);
      return {v[0], v[1], v[2] != 0};
    }
  };

  enum {
    sign, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
    step_size,     // -lr / (1 - beta1^t)
    inv_sqrt_bc2,  // 1 / sqrt(1 - beta2^t)
    eps_root_bc2,  // eps_root * (1 - beta2^t)
    decay,         // -lr * weight_decay
    num_coef
  };

  template <class S>
  static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S& t, const Options& o) {
    const auto& [lr, b1, b2, wd] = h;
    const S bc2 = 1 - math::pow(b2, t);
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            b1,
            1 - b1,
            b2,
            1 - b2,
            math::constant(lr, o.eps),
            -lr / (1 - math::pow(b1, t)),
            math::reciprocal(math::sqrt(bc2)),
            o.eps_root * bc2,
            -lr * wd};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 3> forward(const V& g, const std::array<V, 2>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g;
    const V mu = c[beta1] * s[0] + c[one_minus_beta1] * gp;
    const V nu = c[beta2] * s[1] + c[one_minus_beta2] * (gp * gp);
    const V d = math::sqrt(nu + c[eps_root_bc2]) * c[inv_sqrt_bc2] + c[eps];
    return {c[step_size] * (mu / d) + c[decay] * p, mu, nu};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 2, num_coef> vjp(const V& gu, const std::array<V, 2>& gs,
                                                  const V& g, const std::array<V, 2>& s,
                                                  const V& p, const C& c) {
    // Forward again (the backward saves only the inputs).
    const V gp = c[sign] * g;
    const V mu = c[beta1] * s[0] + c[one_minus_beta1] * gp;
    const V nu = c[beta2] * s[1] + c[one_minus_beta2] * (gp * gp);
    const V q = math::sqrt(nu + c[eps_root_bc2]);
    const V inv_d = math::reciprocal(q * c[inv_sqrt_bc2] + c[eps]);
    const V r = mu * inv_d;
    // Backward through u = step_size * r + decay * p, r = mu / d,
    // d = q * inv_sqrt_bc2 + eps.
    const V gr = gu * c[step_size];
    const V g_mu = gs[0] + gr * inv_d;
    const V g_d = -(gr * r * inv_d);  // 0 where mu' = 0
    const V g_q = g_d * c[inv_sqrt_bc2];
    // Where mu' = 0, g_q = 0 and nu' does not matter: dividing by 1 there
    // instead of q keeps this finite when q = 0 (see rules/adam.h).
    const V q_safe = math::where_zero(mu, 1.0, q);
    const V g_nu_inner = g_q / (q_safe + q_safe);
    const V g_nu = gs[1] + g_nu_inner;
    // fmadd: the same rounding whether or not the coefficient terms are computed.
    const V g_gp = math::fmadd(c[one_minus_beta1], g_mu, c[one_minus_beta2] * (gp + gp) * g_nu);
    return {c[sign] * g_gp,
            {c[beta1] * g_mu, c[beta2] * g_nu},
            c[decay] * gu,
            {g_gp * g,                 // sign
             g_mu * s[0],              // beta1
             g_mu * gp,                // one_minus_beta1
             g_nu * s[1],              // beta2
             g_nu * (gp * gp),         // one_minus_beta2
             g_d,                      // eps
             gu * r,                   // step_size
             g_d * q,                  // inv_sqrt_bc2
             g_nu_inner,               // eps_root_bc2
             gu * p}};                 // decay
  }
};

}  // namespace unrollopt::rules
