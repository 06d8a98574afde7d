#pragma once
// Adagrad (Duchi, Hazan and Singer, 2011) as torch.optim.Adagrad computes it.
// With t the step number and sign = -1 when maximizing:
//   g' = sign * g + weight_decay * p
//   s' = s + g'^2                                        (sum)
//   u  = -lr / (1 + (t - 1) * lr_decay) * g' / (sqrt(s') + eps)
// The vector-Jacobian product is exact for every eps, including where s' = 0
// (then g' = 0 for s >= 0, u does not depend on s' and d u / d s' = 0, where
// plain autograd meets sqrt'(0)), and where g'^2 underflowed (root_of_mean_square).

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Adagrad {
  static constexpr const char* name = "adagrad";
  static constexpr std::array<const char*, 1> states{"sum"};
  static constexpr std::array<const char*, 3> hyperparameters{"lr", "lr_decay", "weight_decay"};
  struct Options : EpsOptions {
    static Options read(c10::ArrayRef<double> values) { return {EpsOptions::read(name, values)}; }
  };

  enum {
    sign,
    weight_decay,
    eps,
    step_size,  // -lr / (1 + (t - 1) * lr_decay)
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 3>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, lr_decay, wd] = h;
    return {math::constant(lr, o.maximize ? -1.0 : 1.0), wd, math::constant(lr, o.eps),
            -lr / (1 + (t - 1) * lr_decay)};
  }

  // sqrt(sum'): take_root.
  template <Pass P, class V>
  UNROLLOPT_INLINE static V root(const V& sum, const V& gp, const std::array<V, 1>& s) {
    return take_root<P>(sum, gp, sum,
                        [&](const Upscaled<V>& up) { return up.squares(s[0]) + up.square(gp); });
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 2> forward(const V& g, const std::array<V, 1>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V sum = s[0] + gp * gp;
    return {c[step_size] * (gp / (root<Pass::forward>(sum, gp, s) + c[eps])), sum};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 1, num_coef> vjp(const V& gu, const std::array<V, 1>& gs,
                                                  const V& g, const std::array<V, 1>& s, const V& p,
                                                  const C& c) {
    // Forward again; fmadd: the same rounding whether or not the coefficient
    // terms are computed.
    const V gp = math::fmadd(c[sign], g, c[weight_decay] * p);
    const V sum = math::fmadd(gp, gp, s[0]);
    const V q = root<Pass::vjp>(sum, gp, s);
    const V inv_d = math::reciprocal(q + c[eps]);
    const V r = gp * inv_d;
    const V gr = gu * c[step_size];
    const V g_d = -(gr * gp) * math::square(inv_d);  // 0 where g' = 0
    // Where g' = 0, u does not depend on s': dividing by 1 instead of q keeps
    // this finite when q = 0 (and its own derivatives finite).
    const V q_safe = math::where_zero(gp, 1.0, q);
    const V g_sum = gs[0] + through_root(g_d, q_safe);
    const V g_gp = math::fmadd(gr, inv_d, (gp + gp) * g_sum);
    return {c[sign] * g_gp,
            {g_sum},
            c[weight_decay] * g_gp,
            {g_gp * g,  // sign
             g_gp * p,  // weight_decay
             g_d,       // eps
             gu * r}};  // step_size
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct AdagradState {
  std::vector<at::Tensor> sum;  // the sums of squared gradients
  at::Tensor count;
  UNROLLOPT_STATES(sum)
};

// unrollopt::Adagrad.
struct AdagradOptions {
  Hyperparameter lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0;
  double initial_accumulator_value = 0.0, eps = 1e-10;

  static constexpr const char* name = "Adagrad";
  using State = AdagradState;
  using Rule = rules::Adagrad;
  UNROLLOPT_SETTINGS(lr, lr_decay, weight_decay, initial_accumulator_value, eps)
  static constexpr std::array<detail::InitialState, 1> initial_states{
      {{"sum", "initial_accumulator_value"}}};
};

}  // namespace unrollopt
