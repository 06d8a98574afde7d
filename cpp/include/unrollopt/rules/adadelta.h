#pragma once
// Adadelta (Zeiler, 2012) as torch.optim.Adadelta computes it. With sign = -1
// when maximizing:
//   g'     = sign * g + weight_decay * p
//   s'     = rho * s + (1 - rho) * g'^2                    (square_avg)
//   delta  = sqrt(a + eps) / sqrt(s' + eps) * g'
//   a'     = rho * a + (1 - rho) * delta^2                 (acc_delta)
//   u      = -lr * delta
// Both square roots have eps inside: for eps > 0 the step is smooth and the
// vector-Jacobian product is exact everywhere. (With eps = 0 the step divides
// by sqrt(s'), 0/0 where s' = 0, and sqrt(a) has an infinite derivative at
// a = 0 where g' != 0: no removable singularity to handle.)

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Adadelta {
  static constexpr const char* name = "adadelta";
  static constexpr std::array<const char*, 2> states{"square_avg", "acc_delta"};
  static constexpr std::array<const char*, 3> hyperparameters{"lr", "rho", "weight_decay"};
  struct Options : EpsOptions {
    static Options read(c10::ArrayRef<double> values) { return {EpsOptions::read(name, values)}; }
  };

  enum { sign, weight_decay, rho, one_minus_rho, eps, neg_lr, num_coef };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 3>& h, const S&,
                                                            const Options& o) {
    const auto& [lr, r, wd] = h;
    return {
        math::constant(lr, o.maximize ? -1.0 : 1.0), wd, r, 1 - r, math::constant(lr, o.eps), -lr};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 3> forward(const V& g, const std::array<V, 2>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V sq = c[rho] * s[0] + c[one_minus_rho] * (gp * gp);
    const V delta = math::sqrt(s[1] + c[eps]) / math::sqrt(sq + c[eps]) * gp;
    const V acc = c[rho] * s[1] + c[one_minus_rho] * (delta * delta);
    return {c[neg_lr] * delta, sq, acc};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 2, num_coef> vjp(const V& gu, const std::array<V, 2>& gs,
                                                  const V& g, const std::array<V, 2>& s, const V& p,
                                                  const C& c) {
    // Forward again; fmadd: the same rounding whether or not the coefficient
    // terms are computed.
    const V gp = math::fmadd(c[sign], g, c[weight_decay] * p);
    const V sq = math::fmadd(c[rho], s[0], c[one_minus_rho] * (gp * gp));
    const V dl = math::sqrt(s[1] + c[eps]);
    const V sd = math::sqrt(sq + c[eps]);
    const V inv_sd = math::reciprocal(sd);
    const V ratio = dl * inv_sd;
    const V delta = ratio * gp;
    // Backward through acc' = rho * a + (1 - rho) * delta^2 and u = neg_lr * delta.
    const V g_delta = math::fmadd(gu, c[neg_lr], c[one_minus_rho] * (delta + delta) * gs[1]);
    // delta = dl / sd * g'.
    const V g_ratio = g_delta * gp;
    const V g_dl = g_ratio * inv_sd;
    const V g_sd = -(g_ratio * ratio * inv_sd);
    const V g_a_inner = g_dl / (dl + dl);  // d/d (a + eps)
    const V g_s_inner = g_sd / (sd + sd);  // d/d (s' + eps)
    const V g_sq = gs[0] + g_s_inner;
    const V g_gp = math::fmadd(g_delta, ratio, c[one_minus_rho] * (gp + gp) * g_sq);
    return {c[sign] * g_gp,
            {c[rho] * g_sq, math::fmadd(c[rho], gs[1], g_a_inner)},
            c[weight_decay] * g_gp,
            {g_gp * g,                                             // sign
             g_gp * p,                                             // weight_decay
             math::fmadd(g_sq, s[0], gs[1] * s[1]),                // rho
             math::fmadd(g_sq, gp * gp, gs[1] * (delta * delta)),  // one_minus_rho
             g_a_inner + g_s_inner,                                // eps
             gu * delta}};                                         // neg_lr
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct AdadeltaState {
  std::vector<at::Tensor> square_avg, acc_delta;
  at::Tensor count;
  UNROLLOPT_STATES(square_avg, acc_delta)
};

// unrollopt::Adadelta (torch.optim.Adadelta's defaults).
struct AdadeltaOptions {
  Hyperparameter lr = 1.0, rho = 0.9;
  double eps = 1e-6;
  Hyperparameter weight_decay = 0.0;

  static constexpr const char* name = "Adadelta";
  using State = AdadeltaState;
  using Rule = rules::Adadelta;
  UNROLLOPT_SETTINGS(lr, rho, eps, weight_decay)
};

}  // namespace unrollopt
