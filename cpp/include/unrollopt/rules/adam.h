#pragma once
// Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019) as
// torch.optim computes them, with optax's eps_root. They share their math and
// differ in where the weight decay enters. With t the step number and
// sign = -1 when maximizing:
//   g'  = sign * g (+ weight_decay * p: Adam's coupled L2)
//   mu' = beta1 * mu + (1 - beta1) * g'
//   nu' = beta2 * nu + (1 - beta2) * g'^2
//   u   = -lr / (1 - beta1^t) * mu' / (sqrt(nu' / (1 - beta2^t) + eps_root) + eps)
//         (- lr * weight_decay * p: AdamW's decoupled decay; torch.optim.AdamW's
//          p <- p (1 - lr weight_decay) followed by the Adam step is p + u)
// With AMSGrad (adam_amsgrad, adamw_amsgrad) the denominator uses the running
// maximum nu_max' = max(nu_max, nu') instead of nu' (a third state).
// The vector-Jacobian product is exact for every eps and eps_root, including
// where mu' = 0 (u does not depend on nu' there, so d u / d nu' = 0, where plain
// autograd meets sqrt'(0)) and where g'^2 underflowed (root_of_mean_square). The maximum passes its
// cotangent to the argument it selected, to nu_max at a tie (as Adamax's).

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

template <bool Decoupled, bool Amsgrad = false>
struct AdamFamily {
  static constexpr const char* name =
      Decoupled ? (Amsgrad ? "adamw_amsgrad" : "adamw") : (Amsgrad ? "adam_amsgrad" : "adam");
  static constexpr size_t NS = Amsgrad ? 3 : 2;
  static constexpr auto states = [] {
    std::array<const char*, NS> s{};
    s[0] = "mu";
    s[1] = "nu";
    if constexpr (Amsgrad) s[2] = "nu_max";
    return s;
  }();
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "beta1", "beta2",
                                                              "weight_decay"};
  struct Options {
    static constexpr std::array<const char*, 3> names{"eps", "eps_root", "maximize"};
    static constexpr size_t num_flags = 1;
    double eps, eps_root;
    bool maximize;
    static Options read(c10::ArrayRef<double> values) {
      const auto v = read_options(name, values, names);
      return {v[0], v[1], v[2] != 0};
    }
  };

  enum {
    sign,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    step_size,     // -lr / (1 - beta1^t)
    inv_sqrt_bc2,  // 1 / sqrt(1 - beta2^t)
    eps_root_bc2,  // eps_root * (1 - beta2^t)
    decay,         // Adam: weight_decay (times p, into g'); AdamW: -lr * weight_decay (into u)
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S& t,
                                                            const Options& o) {
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
            Decoupled ? -lr * wd : wd};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static V decayed_grad(const V& g, const V& p, const C& c) {
    if constexpr (Decoupled) {
      return c[sign] * g;
    } else {
      return c[sign] * g + c[decay] * p;
    }
  }

  // max(a, b) with ties to a, as a sum of selections (exact: one term is 0).
  template <class V>
  UNROLLOPT_INLINE static V max_first(const V& a, const V& b) {
    return math::where_ge(a, b, a) + (b - math::where_ge(a, b, b));
  }

  // sqrt(w + eps_root (1 - beta2^t)), w = nu' (or AMSGrad's maximum): take_root.
  template <Pass P, class V, class C>
  UNROLLOPT_INLINE static V root(const V& w, const V& mu, const V& gp, const std::array<V, NS>& s,
                                 const C& c) {
    const V w_root = w + c[eps_root_bc2];
    return take_root<P>(w_root, mu, w_root, [&](const Upscaled<V>& up) {
      V nu_up = c[beta2] * up.squares(s[1]) + c[one_minus_beta2] * up.square(gp);
      if constexpr (Amsgrad) nu_up = max_first<V>(up.squares(s[2]), nu_up);
      return nu_up + up.squares(c[eps_root_bc2]);
    });
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 1 + NS> forward(const V& g, const std::array<V, NS>& s,
                                                        const V& p, const C& c) {
    const V gp = decayed_grad(g, p, c);
    const V mu = c[beta1] * s[0] + c[one_minus_beta1] * gp;
    const V nu = c[beta2] * s[1] + c[one_minus_beta2] * (gp * gp);
    std::array<V, 1 + NS> out;
    out[1] = mu;
    out[2] = nu;
    V w = nu;  // what the denominator takes the root of
    if constexpr (Amsgrad) {
      w = max_first<V>(s[2], nu);
      out[3] = w;
    }
    const V d = root<Pass::forward>(w, mu, gp, s, c) * c[inv_sqrt_bc2] + c[eps];
    const V u = c[step_size] * (mu / d);
    if constexpr (Decoupled) {
      out[0] = u + c[decay] * p;
    } else {
      out[0] = u;
    }
    return out;
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, NS, num_coef> vjp(const V& gu, const std::array<V, NS>& gs,
                                                   const V& g, const std::array<V, NS>& s,
                                                   const V& p, const C& c) {
    // Forward again (the backward saves only the inputs).
    const V gp = decayed_grad(g, p, c);
    const V mu = c[beta1] * s[0] + c[one_minus_beta1] * gp;
    const V nu = c[beta2] * s[1] + c[one_minus_beta2] * (gp * gp);
    V w = nu;
    if constexpr (Amsgrad) w = max_first<V>(s[2], nu);
    const V q = root<Pass::vjp>(w, mu, gp, s, c);
    const V inv_d = math::reciprocal(q * c[inv_sqrt_bc2] + c[eps]);
    const V r = mu * inv_d;
    // Backward through u = step_size * r, r = mu / d, d = q * inv_sqrt_bc2 + eps.
    const V gr = gu * c[step_size];
    const V g_mu = gs[0] + gr * inv_d;
    const V g_d = -(gr * mu) * math::square(inv_d);  // 0 where mu' = 0
    const V g_q = g_d * c[inv_sqrt_bc2];
    // q = sqrt(nu' + eps_root_bc2): where mu' = 0, g_q = 0 and nu' does not
    // matter; dividing by 1 there instead of q keeps this finite when q = 0 (and
    // its own derivatives finite). Where q = 0 but mu' != 0 the derivative is
    // truly infinite.
    const V q_safe = math::where_zero(mu, 1.0, q);
    const V g_w_inner = through_root(g_q, q_safe);
    // Through w = max(nu_max, nu') (AMSGrad) to nu', or w = nu'.
    V g_w = g_w_inner;
    V g_nu_max_in;  // the cotangent of the old nu_max
    if constexpr (Amsgrad) {
      g_w = g_w + gs[2];
      g_nu_max_in = math::where_ge(s[2], nu, g_w);  // ties to nu_max
      g_w = g_w - g_nu_max_in;
    }
    const V g_nu = gs[1] + g_w;
    // fmadd: the same rounding whether or not the coefficient terms are computed.
    const V g_gp = math::fmadd(c[one_minus_beta1], g_mu, c[one_minus_beta2] * (gp + gp) * g_nu);
    // Where the decay enters: the gradient (Adam) or the update (AdamW).
    const V& g_decayed = Decoupled ? gu : g_gp;
    Vjp<V, NS, num_coef> out{c[sign] * g_gp,
                             {},
                             c[decay] * g_decayed,
                             {g_gp * g,          // sign
                              g_mu * s[0],       // beta1
                              g_mu * gp,         // one_minus_beta1
                              g_nu * s[1],       // beta2
                              g_nu * (gp * gp),  // one_minus_beta2
                              g_d,               // eps
                              gu * r,            // step_size
                              g_d * q,           // inv_sqrt_bc2
                              g_w_inner,         // eps_root_bc2
                              g_decayed * p}};   // decay
    out.states[0] = c[beta1] * g_mu;
    out.states[1] = c[beta2] * g_nu;
    if constexpr (Amsgrad) out.states[2] = g_nu_max_in;
    return out;
  }
};

using Adam = AdamFamily<false>;
using AdamW = AdamFamily<true>;
using AdamAmsgrad = AdamFamily<false, true>;
using AdamWAmsgrad = AdamFamily<true, true>;

}  // namespace unrollopt::rules

namespace unrollopt {

// Adam, AdamW, Adamax and RAdam's state.
struct AdamState {
  std::vector<at::Tensor> mu, nu;  // first and second moments (Adamax: the infinity norm)
  at::Tensor count;                // 0-d int64: the number of steps taken
  std::vector<at::Tensor> nu_max;  // AMSGrad's running maximum of nu; empty without
  UNROLLOPT_STATES(mu, nu, nu_max)
};

// unrollopt::Adam (Decoupled = false) and unrollopt::AdamW (true).
template <bool Decoupled>
struct AdamFamilyOptions {
  Hyperparameter lr = 1e-3, beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8, eps_root = 0.0;
  Hyperparameter weight_decay = Decoupled ? 1e-2 : 0.0;
  bool amsgrad = false;

  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";
  using State = AdamState;
  static constexpr const char* family = rules::AdamFamily<Decoupled>::name;  // + _amsgrad
  static constexpr std::array variants{"amsgrad"};
  UNROLLOPT_SETTINGS(lr, beta1, beta2, eps, eps_root, weight_decay, amsgrad)
};
using AdamOptions = AdamFamilyOptions<false>;
using AdamWOptions = AdamFamilyOptions<true>;

}  // namespace unrollopt
