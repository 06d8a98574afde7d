#pragma once
// RAdam (Liu et al., 2020) as torch.optim.RAdam computes it. With t the step
// number, sign = -1 when maximizing, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t:
//   g'  = sign * g + weight_decay * p            (coupled L2; 0 when decoupled)
//   mu' = beta1 * mu + (1 - beta1) * g'
//   nu' = beta2 * nu + (1 - beta2) * g'^2
//   rho_inf = 2 / (1 - beta2) - 1,  rho_t = rho_inf - 2 t beta2^t / bc2
//   rectified (rho_t > 5):
//     rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
//     u = -lr / bc1 * rect * sqrt(bc2) * mu' / (sqrt(nu') + eps)
//   else: u = -lr / bc1 * mu'
//   (decoupled weight decay: u -= lr * weight_decay * p, torch's p *= 1 - lr weight_decay)
// Both branches are one element-wise form, u = sgd * mu' + adaptive * mu' / d +
// decay * p, whose coefficients select the branch per step; the unused
// branch's coefficient is 0 and its denominator sqrt(nu') + 1, so it can
// neither produce nor differentiate into a NaN. The vector-Jacobian product is
// exact, and finite where nu' = 0 and the step does not depend on it, and
// where g'^2 underflowed (root_of_mean_square).

#include "adam.h"
#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Radam {
  static constexpr const char* name = "radam";
  static constexpr std::array<const char*, 2> states{"mu", "nu"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "beta1", "beta2",
                                                              "weight_decay"};
  struct Options {
    static constexpr std::array<const char*, 3> names{"eps", "decoupled_weight_decay", "maximize"};
    static constexpr size_t num_flags = 2;
    double eps;
    bool decoupled, maximize;
    static Options read(c10::ArrayRef<double> values) {
      const auto v = read_options(name, values, names);
      return {v[0], v[1] != 0, v[2] != 0};
    }
  };

  enum {
    sign,
    grad_decay,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,           // eps when rectified, else 1
    sgd,           // -lr / bc1 when not rectified, else 0
    adaptive,      // -lr / bc1 * rect * sqrt(bc2) when rectified, else 0
    update_decay,  // -lr * weight_decay when decoupled, else 0
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, b1, b2, wd] = h;
    const S zero = math::constant(lr, 0.0);
    const S b2t = math::pow(b2, t);
    const S bc2 = 1 - b2t;
    const S rho_inf = 2 / (1 - b2) - 1;
    const S rho_t = rho_inf - 2 * t * b2t / bc2;
    // The rectifier's argument, 1 where it is not used (finite derivatives).
    const S arg = math::if_greater(
        rho_t, 5, (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t),
        math::constant(lr, 1.0));
    const S step_size = -lr / (1 - math::pow(b1, t));
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            o.decoupled ? zero : wd,
            b1,
            1 - b1,
            b2,
            1 - b2,
            math::if_greater(rho_t, 5, math::constant(lr, o.eps), math::constant(lr, 1.0)),
            math::if_greater(rho_t, 5, zero, step_size),
            math::if_greater(rho_t, 5, step_size * math::sqrt(arg * bc2), zero),
            o.decoupled ? -lr * wd : zero};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 3> forward(const V& g, const std::array<V, 2>& s,
                                                   const V& p, const C& c) {
    const V gp = math::fmadd(c[sign], g, c[grad_decay] * p);
    const V mu = math::fmadd(c[beta1], s[0], c[one_minus_beta1] * gp);
    const V nu = math::fmadd(c[beta2], s[1], c[one_minus_beta2] * (gp * gp));
    const V r =
        mu / (second_moment_root<Pass::forward>(nu, mu, c[beta2], c[one_minus_beta2], s[1], gp) +
              c[eps]);
    const V u = math::fmadd(c[sgd], mu, math::fmadd(c[adaptive], r, c[update_decay] * p));
    return {u, mu, nu};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 2, num_coef> vjp(const V& gu, const std::array<V, 2>& gs,
                                                  const V& g, const std::array<V, 2>& s, const V& p,
                                                  const C& c) {
    // Forward again (the backward saves only the inputs).
    const V gp = math::fmadd(c[sign], g, c[grad_decay] * p);
    const V mu = math::fmadd(c[beta1], s[0], c[one_minus_beta1] * gp);
    const V nu = math::fmadd(c[beta2], s[1], c[one_minus_beta2] * (gp * gp));
    const V q = second_moment_root<Pass::vjp>(nu, mu, c[beta2], c[one_minus_beta2], s[1], gp);
    const V inv_d = math::reciprocal(q + c[eps]);
    const V r = mu * inv_d;
    // Backward through u = sgd * mu' + adaptive * r + update_decay * p, r = mu' / d,
    // d = q + eps, q = sqrt(nu').
    const V gr = gu * c[adaptive];
    const V g_mu = math::fmadd(gu, c[sgd], math::fmadd(gr, inv_d, gs[0]));
    const V g_d = -(gr * mu) * math::square(inv_d);  // 0 where mu' = 0 or not rectified
    // Where g_d = 0 the step does not depend on q here: dividing by 1 instead of
    // q keeps this finite when q = 0 (and its own derivatives finite).
    const V q_safe = math::where_zero(g_d, 1.0, q);
    const V g_nu_inner = through_root(g_d, q_safe);
    const V g_nu = gs[1] + g_nu_inner;
    const V g_gp = math::fmadd(c[one_minus_beta1], g_mu, c[one_minus_beta2] * (gp + gp) * g_nu);
    return {c[sign] * g_gp,
            {c[beta1] * g_mu, c[beta2] * g_nu},
            math::fmadd(c[grad_decay], g_gp, c[update_decay] * gu),
            {g_gp * g,          // sign
             g_gp * p,          // grad_decay
             g_mu * s[0],       // beta1
             g_mu * gp,         // one_minus_beta1
             g_nu * s[1],       // beta2
             g_nu * (gp * gp),  // one_minus_beta2
             g_d,               // eps
             gu * mu,           // sgd
             gu * r,            // adaptive
             gu * p}};          // update_decay
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

// unrollopt::RAdam.
struct RAdamOptions {
  Hyperparameter lr = 1e-3, beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  bool decoupled_weight_decay = false;

  static constexpr const char* name = "RAdam";
  using State = AdamState;  // without nu_max
  using Rule = rules::Radam;
  UNROLLOPT_SETTINGS(lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay)
};

}  // namespace unrollopt
