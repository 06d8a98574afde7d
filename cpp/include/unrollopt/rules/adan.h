#pragma once
// Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
// Faster Optimizing Deep Models") as the authors' implementation computes it,
// with its proximal weight decay. With t the step number and sign = -1 when
// maximizing:
//   g'   = sign * g
//   d    = g' - g_prev       (0 at the first step)
//   mu'  = beta1 * mu + (1 - beta1) * g'
//   dlt' = beta2 * dlt + (1 - beta2) * d
//   z    = g' + beta2 * d
//   nu'  = beta3 * nu + (1 - beta3) * z^2
//   n    = mu' / (1 - beta1^t) + beta2 * dlt' / (1 - beta2^t)
//   p'   = (p - lr * n / (sqrt(nu' / (1 - beta3^t)) + eps)) / (1 + lr * weight_decay)
//   u    = p' - p,  g_prev' = g'
// The vector-Jacobian product is exact, including where n = 0 (u does not
// depend on nu' there) and where z^2 underflowed (root_of_mean_square).

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Adan {
  static constexpr const char* name = "adan";
  static constexpr std::array<const char*, 4> states{"mu", "delta", "nu", "prev_grad"};
  static constexpr std::array<const char*, 5> hyperparameters{"lr", "beta1", "beta2", "beta3",
                                                              "weight_decay"};
  struct Options : EpsOptions {
    static Options read(c10::ArrayRef<double> values) { return {EpsOptions::read(name, values)}; }
  };

  enum {
    sign,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    beta3,
    one_minus_beta3,
    diff,  // 0 at the first step (no previous gradient), else 1
    eps,
    inv_sqrt_bc3,  // 1 / sqrt(1 - beta3^t)
    mu_scale,      // -lr / (1 + lr * weight_decay) / (1 - beta1^t)
    delta_scale,   // -lr / (1 + lr * weight_decay) * beta2 / (1 - beta2^t)
    decay,         // -lr * weight_decay / (1 + lr * weight_decay)
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 5>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, b1, b2, b3, wd] = h;
    const S shrink = math::reciprocal(1 + lr * wd);
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            b1,
            1 - b1,
            b2,
            1 - b2,
            b3,
            1 - b3,
            math::if_greater(t, 1, math::constant(lr, 1.0), math::constant(lr, 0.0)),
            math::constant(lr, o.eps),
            math::reciprocal(math::sqrt(1 - math::pow(b3, t))),
            -lr * shrink / (1 - math::pow(b1, t)),
            -lr * shrink * b2 / (1 - math::pow(b2, t)),
            -lr * wd * shrink};
  }

  // The values both directions start from.
  template <class V>
  struct Moments {
    V gp, d, mu, delta, z, nu;
  };

  template <class V, class C>
  UNROLLOPT_INLINE static Moments<V> moments(const V& g, const std::array<V, 4>& s, const C& c) {
    const V gp = c[sign] * g;
    const V d = c[diff] * (gp - s[3]);
    const V z = math::fmadd(c[beta2], d, gp);
    return {gp,
            d,
            c[beta1] * s[0] + c[one_minus_beta1] * gp,
            c[beta2] * s[1] + c[one_minus_beta2] * d,
            z,
            c[beta3] * s[2] + c[one_minus_beta3] * (z * z)};
  }

  // sqrt(nu'): take_root (the update is n times a function of it).
  template <Pass P, class V, class C>
  UNROLLOPT_INLINE static V root(const Moments<V>& m, const V& n, const std::array<V, 4>& s,
                                 const C& c) {
    return take_root<P>(m.nu, n, m.nu, [&](const Upscaled<V>& up) {
      return c[beta3] * up.squares(s[2]) + c[one_minus_beta3] * up.square(m.z);
    });
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 5> forward(const V& g, const std::array<V, 4>& s,
                                                   const V& p, const C& c) {
    const Moments<V> m = moments(g, s, c);
    const V n = c[mu_scale] * m.mu + c[delta_scale] * m.delta;
    const V den = root<Pass::forward>(m, n, s, c) * c[inv_sqrt_bc3] + c[eps];
    return {n / den + c[decay] * p, m.mu, m.delta, m.nu, m.gp};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 4, num_coef> vjp(const V& gu, const std::array<V, 4>& gs,
                                                  const V& g, const std::array<V, 4>& s, const V& p,
                                                  const C& c) {
    const Moments<V> m = moments(g, s, c);
    const V n = c[mu_scale] * m.mu + c[delta_scale] * m.delta;
    const V q = root<Pass::vjp>(m, n, s, c);
    const V inv_den = math::reciprocal(q * c[inv_sqrt_bc3] + c[eps]);
    const V r = n * inv_den;
    // Backward through u = r + decay * p, r = n / den, den = q * inv_sqrt_bc3 + eps.
    const V g_n = gu * inv_den;
    const V g_den = -(gu * n) * math::square(inv_den);  // 0 where n = 0
    // q = sqrt(nu'): where n = 0, g_den = 0 and nu' does not matter; dividing by
    // 1 there instead of q keeps this finite when q = 0.
    const V q_safe = math::where_zero(n, 1.0, q);
    const V g_nu = gs[2] + through_root(g_den * c[inv_sqrt_bc3], q_safe);
    const V g_mu = gs[0] + g_n * c[mu_scale];
    const V g_delta = gs[1] + g_n * c[delta_scale];
    const V g_z = c[one_minus_beta3] * (m.z + m.z) * g_nu;
    const V g_d = math::fmadd(c[one_minus_beta2], g_delta, c[beta2] * g_z);
    const V g_gp = math::fmadd(c[one_minus_beta1], g_mu, g_z + gs[3]) + c[diff] * g_d;
    return {c[sign] * g_gp,
            {c[beta1] * g_mu, c[beta2] * g_delta, c[beta3] * g_nu, -(c[diff] * g_d)},
            c[decay] * gu,
            {g_gp * g,                               // sign
             g_mu * s[0],                            // beta1
             g_mu * m.gp,                            // one_minus_beta1
             math::fmadd(g_delta, s[1], g_z * m.d),  // beta2 (in delta' and z)
             g_delta * m.d,                          // one_minus_beta2
             g_nu * s[2],                            // beta3
             g_nu * (m.z * m.z),                     // one_minus_beta3
             g_d * (m.gp - s[3]),                    // diff
             g_den,                                  // eps
             g_den * q,                              // inv_sqrt_bc3
             g_n * m.mu,                             // mu_scale
             g_n * m.delta,                          // delta_scale
             gu * p}};                               // decay
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct AdanState {
  // The averages of g, of g - g_prev and of (g + beta2 (g - g_prev))^2, and g_prev.
  std::vector<at::Tensor> mu, delta, nu, prev_grad;
  at::Tensor count;
  UNROLLOPT_STATES(mu, delta, nu, prev_grad)
};

// unrollopt::Adan, with the authors' defaults.
struct AdanOptions {
  Hyperparameter lr = 1e-3;
  Hyperparameter beta1 = 0.98, beta2 = 0.92, beta3 = 0.99;  // the averages' decays, as above
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;  // proximal: p / (1 + lr * weight_decay)

  static constexpr const char* name = "Adan";
  using State = AdanState;
  using Rule = rules::Adan;
  UNROLLOPT_SETTINGS(lr, beta1, beta2, beta3, eps, weight_decay)
};

}  // namespace unrollopt
