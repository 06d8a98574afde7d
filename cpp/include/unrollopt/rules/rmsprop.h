#pragma once
// RMSprop (Hinton, Srivastava and Swersky, 2012) as torch.optim.RMSprop computes
// it, in four rules with one templated math: rmsprop, rmsprop_centered,
// rmsprop_momentum and rmsprop_centered_momentum (state sets differ). With t
// the step number and sign = -1 when maximizing:
//   g'  = sign * g + weight_decay * p
//   s'  = alpha * s + (1 - alpha) * g'^2                 (square_avg)
//   centered: a' = alpha * a + (1 - alpha) * g'          (grad_avg)
//             w  = s' - a'^2;    else w = s'
//   d   = sqrt(w) + eps
//   momentum: b' = momentum * b + g' / d,  u = -lr * b'  (momentum_buffer)
//             nesterov: u = -lr * (g' / d + momentum * b')  (optax's rmsprop)
//   else      u = -lr * g' / d
// The vector-Jacobian product is exact wherever the step is differentiable,
// including where w = 0 and g' = 0 (then the step does not depend on w: d u /
// d w = 0, where plain autograd meets sqrt'(0); not centered, s' = 0 implies
// g' = 0 for s >= 0), and where g'^2 underflowed (root_of_mean_square). Where
// the exact w is 0 but g' != 0 the derivative is truly infinite.

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct RmspropFlags {
  static constexpr std::array<const char*, 3> names{"eps", "nesterov", "maximize"};
  static constexpr size_t num_flags = 2;
  double eps;
  bool nesterov;  // read by the momentum rules only
  bool maximize;
  static RmspropFlags read(const char* op, c10::ArrayRef<double> values) {
    const auto v = read_options(op, values, names);
    return {v[0], v[1] != 0, v[2] != 0};
  }
};

// Names and lists per variant.
template <bool Centered, bool Momentum>
struct RmspropNames;
template <>
struct RmspropNames<false, false> {
  static constexpr const char* name = "rmsprop";
  static constexpr std::array<const char*, 1> states{"square_avg"};
  static constexpr std::array<const char*, 3> hyperparameters{"lr", "alpha", "weight_decay"};
};
template <>
struct RmspropNames<true, false> {
  static constexpr const char* name = "rmsprop_centered";
  static constexpr std::array<const char*, 2> states{"square_avg", "grad_avg"};
  static constexpr std::array<const char*, 3> hyperparameters{"lr", "alpha", "weight_decay"};
};
template <>
struct RmspropNames<false, true> {
  static constexpr const char* name = "rmsprop_momentum";
  static constexpr std::array<const char*, 2> states{"square_avg", "momentum_buffer"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "alpha", "momentum",
                                                              "weight_decay"};
};
template <>
struct RmspropNames<true, true> {
  static constexpr const char* name = "rmsprop_centered_momentum";
  static constexpr std::array<const char*, 3> states{"square_avg", "grad_avg", "momentum_buffer"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "alpha", "momentum",
                                                              "weight_decay"};
};

template <bool Centered, bool Momentum>
struct RmspropRule : RmspropNames<Centered, Momentum> {
  using Names = RmspropNames<Centered, Momentum>;
  static constexpr const char* name = Names::name;
  static constexpr auto states = Names::states;
  static constexpr auto hyperparameters = Names::hyperparameters;
  static constexpr size_t NS = states.size();
  static constexpr size_t NH = hyperparameters.size();
  // Index of each state.
  static constexpr size_t kSq = 0, kGa = 1, kBuf = Centered ? 2 : 1;

  struct Options : RmspropFlags {
    static Options read(c10::ArrayRef<double> values) { return {RmspropFlags::read(name, values)}; }
  };

  // The last three are coefficients of the momentum rules only.
  enum {
    sign,
    weight_decay,
    alpha,
    one_minus_alpha,
    eps,
    neg_lr,
    momentum,
    ratio_weight,  // nesterov ? 1 : 0
    buf_weight     // nesterov ? momentum : 1
  };
  static constexpr size_t num_coef = Momentum ? 9 : 6;

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, NH>& h, const S&,
                                                            const Options& o) {
    const S& lr = h[0];
    const S& a = h[1];
    const S& wd = h[NH - 1];
    std::array<S, num_coef> c;
    c[sign] = math::constant(lr, o.maximize ? -1.0 : 1.0);
    c[weight_decay] = wd;
    c[alpha] = a;
    c[one_minus_alpha] = 1 - a;
    c[eps] = math::constant(lr, o.eps);
    c[neg_lr] = -lr;
    if constexpr (Momentum) {
      c[momentum] = h[2];
      c[ratio_weight] = math::constant(lr, o.nesterov ? 1.0 : 0.0);
      c[buf_weight] = o.nesterov ? h[2] : math::constant(lr, 1.0);
    }
    return c;
  }

  // sqrt(w), w = s' (centered: s' - a'^2), recomputed where the mean of
  // squares s' underflowed (w <= s'): take_root.
  template <Pass P, class V, class C>
  UNROLLOPT_INLINE static V root(const V& w, const V& sq, const V& gp, const std::array<V, NS>& s,
                                 const C& c) {
    return take_root<P>(w, gp, sq, [&](const Upscaled<V>& up) {
      V w_up = c[alpha] * up.squares(s[kSq]) + c[one_minus_alpha] * up.square(gp);
      if constexpr (Centered) w_up = w_up - up.square(c[alpha] * s[kGa] + c[one_minus_alpha] * gp);
      return w_up;
    });
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 1 + NS> forward(const V& g, const std::array<V, NS>& s,
                                                        const V& p, const C& c) {
    std::array<V, 1 + NS> out;
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V sq = c[alpha] * s[kSq] + c[one_minus_alpha] * (gp * gp);
    out[1 + kSq] = sq;
    V w = sq;
    if constexpr (Centered) {
      const V ga = c[alpha] * s[kGa] + c[one_minus_alpha] * gp;
      out[1 + kGa] = ga;
      w = sq - ga * ga;
    }
    const V ratio = gp / (root<Pass::forward>(w, sq, gp, s, c) + c[eps]);
    if constexpr (Momentum) {
      const V buf = math::fmadd(c[momentum], s[kBuf], ratio);
      out[1 + kBuf] = buf;
      out[0] = c[neg_lr] * math::fmadd(c[ratio_weight], ratio, c[buf_weight] * buf);
    } else {
      out[0] = c[neg_lr] * ratio;
    }
    return out;
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, NS, num_coef> vjp(const V& gu, const std::array<V, NS>& gs,
                                                   const V& g, const std::array<V, NS>& s,
                                                   const V& p, const C& c) {
    // Forward again (the backward saves only the inputs). fmadd: the same
    // rounding whether or not the coefficient terms are computed.
    const V gp = math::fmadd(c[sign], g, c[weight_decay] * p);
    const V sq = math::fmadd(c[alpha], s[kSq], c[one_minus_alpha] * (gp * gp));
    V w = sq;
    V ga;
    if constexpr (Centered) {
      ga = math::fmadd(c[alpha], s[kGa], c[one_minus_alpha] * gp);
      w = sq - ga * ga;
    }
    const V q = root<Pass::vjp>(w, sq, gp, s, c);
    const V inv_d = math::reciprocal(q + c[eps]);
    const V ratio = gp * inv_d;
    Vjp<V, NS, num_coef> r;
    // Backward through u = neg_lr * (ratio_weight * ratio + buf_weight * buf'),
    // buf' = momentum * buf + ratio (or u = neg_lr * ratio), ratio = g' / d,
    // d = sqrt(w) + eps.
    V g_ratio;
    if constexpr (Momentum) {
      const V buf = math::fmadd(c[momentum], s[kBuf], ratio);
      const V g_v = gu * c[neg_lr];  // the cotangent of ratio_weight * ratio + buf_weight * buf'
      const V g_buf = math::fmadd(g_v, c[buf_weight], gs[kBuf]);
      g_ratio = math::fmadd(g_v, c[ratio_weight], g_buf);
      r.states[kBuf] = c[momentum] * g_buf;
      r.coef[neg_lr] = gu * math::fmadd(c[ratio_weight], ratio, c[buf_weight] * buf);
      r.coef[momentum] = g_buf * s[kBuf];
      r.coef[ratio_weight] = g_v * ratio;
      r.coef[buf_weight] = g_v * buf;
    } else {
      g_ratio = gu * c[neg_lr];
      r.coef[neg_lr] = gu * ratio;
    }
    const V g_d = -(g_ratio * gp) * math::square(inv_d);  // 0 where g' = 0
    // Where g' = 0 the step does not depend on w: dividing by 1 instead of
    // sqrt(w) keeps this finite when w = 0 (and its own derivatives finite).
    const V q_safe = math::where_zero(gp, 1.0, q);
    const V g_w = through_root(g_d, q_safe);
    const V g_sq = gs[kSq] + g_w;
    r.states[kSq] = c[alpha] * g_sq;
    // d/d g' of s' (and a'), then of ratio.
    V g_gp_avg = (gp + gp) * g_sq;
    V g_alpha = g_sq * s[kSq];
    V g_oma = g_sq * (gp * gp);
    if constexpr (Centered) {
      const V g_ga = gs[kGa] - (ga + ga) * g_w;
      r.states[kGa] = c[alpha] * g_ga;
      g_gp_avg = g_gp_avg + g_ga;
      g_alpha = math::fmadd(g_ga, s[kGa], g_alpha);
      g_oma = math::fmadd(g_ga, gp, g_oma);
    }
    const V g_gp = math::fmadd(g_ratio, inv_d, c[one_minus_alpha] * g_gp_avg);
    r.g = c[sign] * g_gp;
    r.p = c[weight_decay] * g_gp;
    r.coef[sign] = g_gp * g;
    r.coef[weight_decay] = g_gp * p;
    r.coef[alpha] = g_alpha;
    r.coef[one_minus_alpha] = g_oma;
    r.coef[eps] = g_d;
    return r;
  }
};

using Rmsprop = RmspropRule<false, false>;
using RmspropCentered = RmspropRule<true, false>;
using RmspropMomentum = RmspropRule<false, true>;
using RmspropCenteredMomentum = RmspropRule<true, true>;

}  // namespace unrollopt::rules

namespace unrollopt {

struct RMSpropState {
  std::vector<at::Tensor> square_avg;
  std::vector<at::Tensor> grad_avg;         // centered only; else empty
  std::vector<at::Tensor> momentum_buffer;  // with momentum only; else empty
  at::Tensor count;
  UNROLLOPT_STATES(square_avg, grad_avg, momentum_buffer)
};

// unrollopt::RMSprop (torch.optim.RMSprop's, with optax's nesterov and initial_scale).
struct RMSpropOptions {
  Hyperparameter lr = 1e-2, alpha = 0.99;
  double eps = 1e-8;
  Hyperparameter weight_decay = 0.0;
  // A momentum that is 0 and does not require grad means no momentum buffer.
  Hyperparameter momentum = 0.0;
  bool centered = false;
  double initial_scale = 0.0;  // the running average of squares starts here
  bool nesterov = false;

  static constexpr const char* name = "RMSprop";
  using State = RMSpropState;
  static constexpr const char* family = "rmsprop";
  static constexpr std::array variants{"centered", "momentum"};
  UNROLLOPT_SETTINGS(lr, alpha, eps, weight_decay, momentum, centered, initial_scale, nesterov)
  static constexpr std::array<detail::Requirement, 1> requirements{
      {{"nesterov", "momentum", true}}};
  static constexpr std::array<detail::InitialState, 1> initial_states{
      {{"square_avg", "initial_scale"}}};
};

}  // namespace unrollopt
