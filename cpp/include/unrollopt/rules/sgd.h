#pragma once
// Stochastic gradient descent as torch.optim.SGD computes it. With t the step
// number and sign = -1 when maximizing:
//   g' = sign * g + weight_decay * p
// sgd (no momentum):   u = -lr * g'
// sgd_momentum:        b' = g' at t = 1, else momentum * b + (1 - dampening) * g'
//                      u  = -lr * (nesterov ? g' + momentum * b' : b')

#include "optimizer.h"
#include "rule.h"

namespace unrollopt::rules {

struct SgdFlags {
  static constexpr std::array<const char*, 2> names{"maximize", "nesterov"};
  static constexpr size_t num_flags = 2;
  bool maximize, nesterov;
  static SgdFlags read(const char* op, c10::ArrayRef<double> values) {
    const auto v = read_options(op, values, names);
    return {v[0] != 0, v[1] != 0};
  }
};

struct Sgd {
  static constexpr const char* name = "sgd";
  static constexpr std::array<const char*, 0> states{};
  static constexpr std::array<const char*, 2> hyperparameters{"lr", "weight_decay"};
  struct Options : SgdFlags {
    static Options read(c10::ArrayRef<double> values) { return {SgdFlags::read(name, values)}; }
  };

  enum { sign, weight_decay, neg_lr, num_coef };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 2>& h, const S&,
                                                            const Options& o) {
    const auto& [lr, wd] = h;
    return {math::constant(lr, o.maximize ? -1.0 : 1.0), wd, -lr};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 1> forward(const V& g, const std::array<V, 0>&, const V& p,
                                                   const C& c) {
    return {c[neg_lr] * (c[sign] * g + c[weight_decay] * p)};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 0, num_coef> vjp(const V& gu, const std::array<V, 0>&, const V& g,
                                                  const std::array<V, 0>&, const V& p, const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V g_gp = gu * c[neg_lr];
    return {c[sign] * g_gp, {}, c[weight_decay] * g_gp, {g_gp * g, g_gp * p, gu * gp}};
  }
};

struct SgdMomentum {
  static constexpr const char* name = "sgd_momentum";
  static constexpr std::array<const char*, 1> states{"momentum_buffer"};
  static constexpr std::array<const char*, 4> hyperparameters{"lr", "momentum", "dampening",
                                                              "weight_decay"};
  struct Options : SgdFlags {
    static Options read(c10::ArrayRef<double> values) { return {SgdFlags::read(name, values)}; }
  };

  enum {
    sign,
    weight_decay,
    neg_lr,
    decay,        // momentum, or 0 at the first step
    gain,         // 1 - dampening, or 1 at the first step
    grad_weight,  // nesterov ? 1 : 0
    buf_weight,   // nesterov ? momentum : 1
    num_coef
  };

  template <class S>
  UNROLLOPT_HOST_DEVICE static std::array<S, num_coef> coef(const std::array<S, 4>& h, const S& t,
                                                            const Options& o) {
    const auto& [lr, momentum, dampening, wd] = h;
    return {math::constant(lr, o.maximize ? -1.0 : 1.0),
            wd,
            -lr,
            math::if_greater(t, 1, momentum, math::constant(lr, 0.0)),
            math::if_greater(t, 1, 1 - dampening, math::constant(lr, 1.0)),
            math::constant(lr, o.nesterov ? 1.0 : 0.0),
            o.nesterov ? momentum : math::constant(lr, 1.0)};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static std::array<V, 2> forward(const V& g, const std::array<V, 1>& s,
                                                   const V& p, const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V buf = c[decay] * s[0] + c[gain] * gp;
    return {c[neg_lr] * (c[grad_weight] * gp + c[buf_weight] * buf), buf};
  }

  template <class V, class C>
  UNROLLOPT_INLINE static Vjp<V, 1, num_coef> vjp(const V& gu, const std::array<V, 1>& gs,
                                                  const V& g, const std::array<V, 1>& s, const V& p,
                                                  const C& c) {
    const V gp = c[sign] * g + c[weight_decay] * p;
    const V buf = c[decay] * s[0] + c[gain] * gp;
    const V g_dir = gu * c[neg_lr];
    const V g_buf = gs[0] + g_dir * c[buf_weight];
    const V g_gp = g_dir * c[grad_weight] + g_buf * c[gain];
    return {c[sign] * g_gp,
            {c[decay] * g_buf},
            c[weight_decay] * g_gp,
            {g_gp * g,                                          // sign
             g_gp * p,                                          // weight_decay
             gu * (c[grad_weight] * gp + c[buf_weight] * buf),  // neg_lr
             g_buf * s[0],                                      // decay
             g_buf * gp,                                        // gain
             g_dir * gp,                                        // grad_weight
             g_dir * buf}};                                     // buf_weight
  }
};

}  // namespace unrollopt::rules

namespace unrollopt {

struct SgdState {
  std::vector<at::Tensor> momentum_buffer;  // one per parameter; empty without momentum
  at::Tensor count;                         // 0-d int64: the number of steps taken
  UNROLLOPT_STATES(momentum_buffer)
};

// unrollopt::Sgd (torch.optim.SGD's momentum, dampening, Nesterov, weight decay).
struct SgdOptions {
  // A momentum that is 0 and does not require grad means plain SGD (no buffer).
  Hyperparameter lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;

  static constexpr const char* name = "Sgd";
  using State = SgdState;
  static constexpr const char* family = rules::Sgd::name;  // sgd, sgd_momentum
  static constexpr std::array variants{"momentum"};
  UNROLLOPT_SETTINGS(lr, momentum, dampening, weight_decay, nesterov)
  static constexpr std::array<detail::Requirement, 2> requirements{
      {{"nesterov", "momentum", true}, {"nesterov", "dampening", false}}};
};

}  // namespace unrollopt
