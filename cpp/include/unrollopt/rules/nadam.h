#pragma once
// NAdam (Dozat, 2016) as torch.optim.NAdam computes it. With t the step number,
// sign = -1 when maximizing, psi the momentum decay and P_t the product of the
// momentum coefficients mu_1 ... mu_t (the hyperparameter mu_product, kept by
// the caller: torch.optim keeps it as per-parameter state):
//   mu_t = beta1 * (1 - 0.5 * 0.96^(t psi)),  mu_{t+1} likewise
//   g'   = sign * g + weight_decay * p           (coupled L2; 0 when decoupled)
//   m'   = beta1 * m + (1 - beta1) * g'
//   v'   = beta2 * v + (1 - beta2) * g'^2
//   d    = sqrt(v' / (1 - beta2^t)) + eps
//   u    = -lr (1 - mu_t) / (1 - P_t) * g' / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m' / d
//   (decoupled weight decay: u -= lr * weight_decay * p, torch's p *= 1 - lr weight_decay)
// The vector-Jacobian product is exact, and finite where v' = 0 and the step
// does not depend on it, and where g'^2 underflowed (root_of_mean_square).

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Nadam {
  static constexpr const char* name = "nadam";
  static constexpr std::array<const char*, 2> states{"mu", "nu"};
  static constexpr std::array<const char*, 5> hyperparameters{"lr", "beta1", "beta2", "mu_product",
                                                              "weight_decay"};
  struct Options {
    static constexpr std::array<const char*, 4> names{"eps", "momentum_decay",
                                                      "decoupled_weight_decay", "maximize"};
    static constexpr size_t num_flags = 2;
    double eps, momentum_decay;
    bool decoupled, maximize;
    static Options read(c10::ArrayRef<double> values) {
      const auto v = read_options(name, values, names);
      return {v[0], v[1], v[2] != 0, v[3] != 0};
    }
  };

  enum {
    sign,
    grad_decay,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    inv_sqrt_bc2,  // 1 / sqrt(1 - beta2^t)
    grad_step,     // -lr (1 - mu_t) / (1 - P_t)
    moment_step,   // -lr mu_{t+1} / (1 - P_t mu_{t+1})
    update_decay,  // -lr * weight_decay when decoupled, else 0
    num_coef
  };

  // mu_t, the momentum coefficient of step t.
  template <class S>
  UNROLLOPT_HOST_DEVICE static S momentum(const S& b1, const S& t, const Options& o) {
    return b1 * (1 - 0.5 * math::pow(math::constant(b1, 0.96), t * o.momentum_decay));
  }

  // P_t = P_{t-1} mu_t, kept by the caller (torch.optim: per parameter).
  static constexpr ScalarState scalar{"mu_product", 1.0};
  template <class S>
  static S scalar_factor(const std::array<S, 5>& h, const S& t, const Options& o) {
    return momentum(h[1], t, o);
  }

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 5>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, b1, b2, product, wd] = h;
    const S zero = math::constant(lr, 0.0);
    const S mu_t = momentum(b1, t, o);
    const S mu_next = momentum(b1, t + 1, o);
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            o.decoupled ? zero : wd,
            b1,
            1 - b1,
            b2,
            1 - b2,
            math::constant(lr, o.eps),
            math::reciprocal(math::sqrt(1 - math::pow(b2, t))),
            -lr * (1 - mu_t) / (1 - product),
            -lr * mu_next / (1 - product * mu_next),
            o.decoupled ? -lr * wd : zero};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 3> forward(const V& g, const std::array<V, 2>& s,
                                                   const V& p, const C& c) {
    const V gp = math::fmadd(c[sign], g, c[grad_decay] * p);
    const V m = math::fmadd(c[beta1], s[0], c[one_minus_beta1] * gp);
    const V v = math::fmadd(c[beta2], s[1], c[one_minus_beta2] * (gp * gp));
    const V n = math::fmadd(c[grad_step], gp, c[moment_step] * m);
    const V d =
        math::fmadd(second_moment_root<Pass::forward>(v, n, c[beta2], c[one_minus_beta2], s[1], gp),
                    c[inv_sqrt_bc2], c[eps]);
    return {math::fmadd(n, math::reciprocal(d), c[update_decay] * p), m, v};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 2, num_coef> vjp(const V& gu, const std::array<V, 2>& gs,
                                                  const V& g, const std::array<V, 2>& s, const V& p,
                                                  const C& c) {
    // Forward again (the backward saves only the inputs).
    const V gp = math::fmadd(c[sign], g, c[grad_decay] * p);
    const V m = math::fmadd(c[beta1], s[0], c[one_minus_beta1] * gp);
    const V v = math::fmadd(c[beta2], s[1], c[one_minus_beta2] * (gp * gp));
    const V n = math::fmadd(c[grad_step], gp, c[moment_step] * m);
    const V q = second_moment_root<Pass::vjp>(v, n, c[beta2], c[one_minus_beta2], s[1], gp);
    const V inv_d = math::reciprocal(math::fmadd(q, c[inv_sqrt_bc2], c[eps]));
    const V r = n * inv_d;
    // Backward through u = n / d + update_decay * p, n = grad_step * g' +
    // moment_step * m', d = q * inv_sqrt_bc2 + eps, q = sqrt(v').
    const V g_n = gu * inv_d;
    const V g_m = math::fmadd(c[moment_step], g_n, gs[0]);
    const V g_d = -(gu * n) * math::square(inv_d);  // 0 where n = 0
    const V g_q = g_d * c[inv_sqrt_bc2];
    // Where g_q = 0 the step does not depend on q here: dividing by 1 instead of
    // q keeps this finite when q = 0 (and its own derivatives finite).
    const V q_safe = math::where_zero(g_q, 1.0, q);
    const V g_v = gs[1] + through_root(g_q, q_safe);
    const V g_gp =
        math::fmadd(c[grad_step], g_n,
                    math::fmadd(c[one_minus_beta1], g_m, c[one_minus_beta2] * (gp + gp) * g_v));
    return {c[sign] * g_gp,
            {c[beta1] * g_m, c[beta2] * g_v},
            math::fmadd(c[grad_decay], g_gp, c[update_decay] * gu),
            {g_gp * g,         // sign
             g_gp * p,         // grad_decay
             g_m * s[0],       // beta1
             g_m * gp,         // one_minus_beta1
             g_v * s[1],       // beta2
             g_v * (gp * gp),  // one_minus_beta2
             g_d,              // eps
             g_d * q,          // inv_sqrt_bc2
             g_n * gp,         // grad_step
             g_n * m,          // moment_step
             gu * p}};         // update_decay
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct NAdamState {
  std::vector<at::Tensor> mu, nu;
  at::Tensor mu_product;  // 0-d float64: the product of the momentum coefficients so far
  at::Tensor count;
  UNROLLOPT_STATES(mu, nu)
  static constexpr auto scalar_state = &NAdamState::mu_product;  // the rule's scalar
};

// unrollopt::NAdam.
struct NAdamOptions {
  Hyperparameter lr = 2e-3, beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  double momentum_decay = 4e-3;
  bool decoupled_weight_decay = false;

  static constexpr const char* name = "NAdam";
  using State = NAdamState;
  using Rule = rules::Nadam;
  UNROLLOPT_SETTINGS(lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay)
};

}  // namespace unrollopt
