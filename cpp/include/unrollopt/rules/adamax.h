#pragma once
// Adamax (Kingma and Ba, 2015, section 7.1) as torch.optim.Adamax computes it,
// with its coupled (L2) weight decay. With t the step number and sign = -1 when
// maximizing:
//   g'  = sign * g + weight_decay * p
//   mu' = beta1 * mu + (1 - beta1) * g'
//   nu' = max(beta2 * nu, |g'| + eps)          (the exponentially weighted infinity norm)
//   u   = -lr / (1 - beta1^t) * mu' / nu'
// The vector-Jacobian product is exact wherever the step is differentiable,
// that is away from ties beta2 * nu = |g'| + eps and from g' = 0. There it
// uses one-sided choices: max differentiates by selection with ties going to
// its first argument (d nu' / d (beta2 * nu) = 1, d nu' / d (|g'| + eps) = 0 at
// a tie), and d|x|/dx = sign(x), 0 at x = 0 (the subgradient 0). Both are
// derivatives of the same selection the forward makes, so the composite
// (second-order) form differentiates consistently with the kernel. nu' > 0 for
// eps > 0; with eps = 0 and nu' = 0 the step itself is 0/0.

#include "adam.h"
#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Adamax {
  static constexpr const char* name = "adamax";
  static constexpr std::array<const char*, 2> states{"mu", "nu"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "beta1", "beta2",
                                                              "weight_decay"};
  struct Options : EpsOptions {
    static Options read(c10::ArrayRef<double> values) { return {EpsOptions::read(name, values)}; }
  };

  enum {
    sign,
    weight_decay,
    beta1,
    one_minus_beta1,
    beta2,
    eps,
    step_size,  // -lr / (1 - beta1^t)
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, b1, b2, wd] = h;
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            wd,
            b1,
            1 - b1,
            b2,
            math::constant(lr, o.eps),
            -lr / (1 - math::pow(b1, t))};
  }

  // max(a, b) with ties to a, as a sum of selections (exact: one term is 0).
  template <class V>
  UNROLLOPT_INLINE static V max_first(const V& a, const V& b) {
    return math::where_ge(a, b, a) + (b - math::where_ge(a, b, b));
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 3> forward(const V& g, const std::array<V, 2>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V mu = c[beta1] * s[0] + c[one_minus_beta1] * gp;
    const V nu = max_first<V>(c[beta2] * s[1], math::sign(gp) * gp + c[eps]);
    return {c[step_size] * (mu / nu), mu, nu};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 2, num_coef> vjp(const V& gu, const std::array<V, 2>& gs,
                                                  const V& g, const std::array<V, 2>& s, const V& p,
                                                  const C& c) {
    // Forward again (the backward saves only the inputs).
    // fmadd: the same rounding whether or not the coefficient terms are computed.
    const V gp = math::fmadd(c[sign], g, c[weight_decay] * p);
    const V mu = math::fmadd(c[beta1], s[0], c[one_minus_beta1] * gp);
    const V sgn = math::sign(gp);
    const V a = c[beta2] * s[1];
    const V b = sgn * gp + c[eps];
    const V nu = max_first<V>(a, b);
    const V inv_nu = math::reciprocal(nu);
    const V r = mu * inv_nu;
    // Backward through u = step_size * r, r = mu' / nu', nu' = max(a, b).
    const V gr = gu * c[step_size];
    const V g_mu = gs[0] + gr * inv_nu;
    const V g_nu = gs[1] - gr * r * inv_nu;
    const V g_a = math::where_ge(a, b, g_nu);  // ties to a
    const V g_b = g_nu - g_a;
    const V g_gp = math::fmadd(c[one_minus_beta1], g_mu, sgn * g_b);
    return {c[sign] * g_gp,
            {c[beta1] * g_mu, c[beta2] * g_a},
            c[weight_decay] * g_gp,
            {g_gp * g,     // sign
             g_gp * p,     // weight_decay
             g_mu * s[0],  // beta1
             g_mu * gp,    // one_minus_beta1
             g_a * s[1],   // beta2
             g_b,          // eps
             gu * r}};     // step_size
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

// unrollopt::Adamax (torch.optim.Adamax's defaults).
struct AdamaxOptions {
  Hyperparameter lr = 2e-3, beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;

  static constexpr const char* name = "Adamax";
  using State = AdamState;  // without nu_max
  using Rule = rules::Adamax;
  UNROLLOPT_SETTINGS(lr, beta1, beta2, eps, weight_decay)
};

}  // namespace unrollopt
