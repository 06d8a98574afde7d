#pragma once
// Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms",
// Algorithm 2), with its decoupled weight decay. With sign = -1 when maximizing:
//   g'  = sign * g
//   u   = -lr * (sign(beta1 * mu + (1 - beta1) * g') + weight_decay * p)
//   mu' = beta2 * mu + (1 - beta2) * g'
// sign(x) is -1, 0 or 1 (NaN at NaN): where the interpolation is exactly 0 (a
// tie) the parameter takes only the weight decay, as with torch.sign and optax.lion.
// The vector-Jacobian product is exact: sign has derivative 0 everywhere it is
// differentiable, and 0 is also what it uses at 0 (as autograd's torch.sign),
// so u depends on g, mu and beta1 only through nothing differentiable; the
// gradients flow through mu' (to g, mu, beta2), through the decay (to p,
// weight_decay) and to lr.

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct Lion {
  static constexpr const char* name = "lion";
  static constexpr std::array<const char*, 1> states{"mu"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "beta1", "beta2",
                                                              "weight_decay"};
  struct Options {
    static constexpr std::array<const char*, 1> names{"maximize"};
    static constexpr size_t num_flags = 1;
    bool maximize;
    static Options read(c10::ArrayRef<double> values) {
      return {read_options(name, values, names)[0] != 0};
    }
  };

  enum { sign, beta1, one_minus_beta1, beta2, one_minus_beta2, neg_lr, decay, num_coef };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S&,
                                                            const Options& o) {
    const auto& [lr, b1, b2, wd] = h;
    return {math::constant(lr, o.maximize ? -1.0 : 1.0), b1, 1 - b1, b2, 1 - b2, -lr, -lr * wd};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 2> forward(const V& g, const std::array<V, 1>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g;
    const V direction = math::sign(c[beta1] * s[0] + c[one_minus_beta1] * gp);
    return {c[neg_lr] * direction + c[decay] * p, c[beta2] * s[0] + c[one_minus_beta2] * gp};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 1, num_coef> vjp(const V& gu, const std::array<V, 1>& gs,
                                                  const V& g, const std::array<V, 1>& s, const V& p,
                                                  const C& c) {
    const V gp = c[sign] * g;
    const V direction = math::sign(c[beta1] * s[0] + c[one_minus_beta1] * gp);
    const V g_gp = c[one_minus_beta2] * gs[0];  // only through mu'
    const V zero = math::zeros_like(g);
    return {c[sign] * g_gp,
            {c[beta2] * gs[0]},
            c[decay] * gu,
            {g_gp * g,        // sign
             zero,            // beta1: only inside sign
             zero,            // one_minus_beta1
             gs[0] * s[0],    // beta2
             gs[0] * gp,      // one_minus_beta2
             gu * direction,  // neg_lr
             gu * p}};        // decay
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct LionState {
  std::vector<at::Tensor> mu;  // the momentum
  at::Tensor count;
  UNROLLOPT_STATES(mu)
};

// unrollopt::Lion (Chen et al., 2023): the sign of an interpolated momentum.
struct LionOptions {
  Hyperparameter lr = 1e-4;
  Hyperparameter beta1 = 0.9;         // the interpolation whose sign is the step
  Hyperparameter beta2 = 0.99;        // the momentum's decay
  Hyperparameter weight_decay = 0.0;  // decoupled, as AdamW's

  static constexpr const char* name = "Lion";
  using State = LionState;
  using Rule = rules::Lion;
  UNROLLOPT_SETTINGS(lr, beta1, beta2, weight_decay)
};

}  // namespace unrollopt
