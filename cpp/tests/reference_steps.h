#pragma once
// One step of every operator written from torch.optim's documented equations
// (and the papers'), in plain ATen ops: independent of the rules, and
// differentiable (the hyperparameters are tensors), so that autograd of a
// reference is the reference for the fused backward. Used in float64.

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "testing.h"

namespace unrollopt::testing {

struct ReferenceStep {
  Tensor update;
  TensorVector states;
  // Where defined, the elements whose update no rounding of the inputs'
  // arithmetic can change (Lion's is a sign, which flips where its argument is
  // within rounding of 0); elsewhere no tolerance would hold.
  Tensor decided;
};

// The arguments of one operator call, for one tensor: its hyperparameters and
// options by name (the operator's order is the describe() order).
struct ReferenceArgs {
  const Tensor& g;
  const TensorVector& states;
  Tensor p;  // zeros when the call has no params
  std::map<std::string, Tensor> hyper;
  std::map<std::string, double> options;
  double t;  // the step number

  const Tensor& h(const std::string& name) const { return hyper.at(name); }
  bool flag(const std::string& name) const { return options.at(name) != 0; }
  // sign * g (maximize) plus, where asked, a coupled (L2) weight decay.
  Tensor decayed_grad(bool coupled = true) const {
    const Tensor gs = flag("maximize") ? -g : g;
    return coupled ? gs + h("weight_decay") * p : gs;
  }
};

namespace reference {

template <bool Decoupled, bool Amsgrad>
ReferenceStep adam(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2"), &wd = a.h("weight_decay");
  const Tensor g = a.decayed_grad(!Decoupled);
  const Tensor m = b1 * a.states[0] + (1 - b1) * g;
  const Tensor v = b2 * a.states[1] + (1 - b2) * g * g;
  const Tensor bc1 = 1 - b1.pow(a.t), bc2 = 1 - b2.pow(a.t);
  const Tensor v_max = Amsgrad ? at::maximum(a.states[2], v) : v;
  Tensor u =
      -lr * (m / bc1) / ((v_max / bc2 + a.options.at("eps_root")).sqrt() + a.options.at("eps"));
  if (Decoupled) u = u - lr * wd * a.p;
  if (Amsgrad) return {u, {m, v, v_max}};
  return {u, {m, v}};
}

inline ReferenceStep adamax(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2");
  const Tensor g = a.decayed_grad();
  const Tensor m = b1 * a.states[0] + (1 - b1) * g;
  const Tensor u = at::maximum(b2 * a.states[1], g.abs() + a.options.at("eps"));
  return {-lr / (1 - b1.pow(a.t)) * m / u, {m, u}};
}

inline ReferenceStep radam(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2"), &wd = a.h("weight_decay");
  const bool decoupled = a.flag("decoupled_weight_decay");
  const Tensor g = a.decayed_grad(!decoupled);
  const Tensor m = b1 * a.states[0] + (1 - b1) * g;
  const Tensor v = b2 * a.states[1] + (1 - b2) * g * g;
  const Tensor m_hat = m / (1 - b1.pow(a.t));
  const Tensor bt = b2.pow(a.t);
  const Tensor rho_inf = 2 / (1 - b2) - 1;
  const Tensor rho_t = rho_inf - 2 * a.t * bt / (1 - bt);
  Tensor u;
  if (rho_t.item<double>() > 5) {
    const Tensor r =
        ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).sqrt();
    u = -lr * m_hat * r * (1 - bt).sqrt() / (v.sqrt() + a.options.at("eps"));
  } else {
    u = -lr * m_hat;
  }
  if (decoupled) u = u - lr * wd * a.p;
  return {u, {m, v}};
}

inline ReferenceStep nadam(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2"), &wd = a.h("weight_decay");
  const Tensor& product = a.h("mu_product");  // mu_1 ... mu_t
  const bool decoupled = a.flag("decoupled_weight_decay");
  const double psi = a.options.at("momentum_decay");
  const Tensor mu_t = b1 * (1 - 0.5 * std::pow(0.96, a.t * psi));
  const Tensor mu_next = b1 * (1 - 0.5 * std::pow(0.96, (a.t + 1) * psi));
  const Tensor g = a.decayed_grad(!decoupled);
  const Tensor m = b1 * a.states[0] + (1 - b1) * g;
  const Tensor v = b2 * a.states[1] + (1 - b2) * g * g;
  const Tensor denom = (v / (1 - b2.pow(a.t))).sqrt() + a.options.at("eps");
  Tensor u = -lr * (1 - mu_t) / (1 - product) * g / denom -
             lr * mu_next / (1 - product * mu_next) * m / denom;
  if (decoupled) u = u - lr * wd * a.p;
  return {u, {m, v}};
}

inline ReferenceStep adadelta(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &rho = a.h("rho");
  const double eps = a.options.at("eps");
  const Tensor g = a.decayed_grad();
  const Tensor square_avg = rho * a.states[0] + (1 - rho) * g * g;
  const Tensor delta = (a.states[1] + eps).sqrt() / (square_avg + eps).sqrt() * g;
  const Tensor acc_delta = rho * a.states[1] + (1 - rho) * delta * delta;
  return {-lr * delta, {square_avg, acc_delta}};
}

inline ReferenceStep adagrad(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &lr_decay = a.h("lr_decay");
  const Tensor g = a.decayed_grad();
  const Tensor sum = a.states[0] + g * g;
  const Tensor clr = lr / (1 + (a.t - 1) * lr_decay);
  return {-clr * g / (sum.sqrt() + a.options.at("eps")), {sum}};
}

// Xie et al. (2022), as the authors' implementation computes it: the gradient
// difference (0 at the first step), three averages, the proximal weight decay
// p' = (p - lr * direction) / (1 + lr * weight_decay); the update is p' - p.
inline ReferenceStep adan(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2"), &b3 = a.h("beta3");
  const Tensor& wd = a.h("weight_decay");
  const Tensor g = a.decayed_grad(/*coupled=*/false);
  const Tensor diff = a.t == 1 ? at::zeros_like(g) : g - a.states[3];
  const Tensor m = b1 * a.states[0] + (1 - b1) * g;
  const Tensor v = b2 * a.states[1] + (1 - b2) * diff;
  const Tensor z = g + b2 * diff;
  const Tensor n = b3 * a.states[2] + (1 - b3) * z * z;
  const Tensor denom = n.sqrt() / (1 - b3.pow(a.t)).sqrt() + a.options.at("eps");
  const Tensor direction = (m / (1 - b1.pow(a.t)) + b2 * v / (1 - b2.pow(a.t))) / denom;
  // p' - p without the cancellation of computing p' first.
  return {-(lr * direction + lr * wd * a.p) / (1 + lr * wd), {m, v, n, g}};
}

// Chen et al. (2023), Algorithm 2.
inline ReferenceStep lion(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &b1 = a.h("beta1"), &b2 = a.h("beta2"), &wd = a.h("weight_decay");
  const Tensor g = a.decayed_grad(/*coupled=*/false);
  const Tensor c = b1 * a.states[0] + (1 - b1) * g;
  // Computed in float32 at worst, c is off by a few float32 roundings (2^-24 =
  // 6e-8) of its terms: 1e-6 of them decides its sign.
  const Tensor terms = (b1 * a.states[0]).abs() + ((1 - b1) * g).abs();
  return {-lr * (c.sign() + wd * a.p),
          {b2 * a.states[0] + (1 - b2) * g},
          c.abs().detach() > 1e-6 * terms.detach()};
}

template <bool Centered, bool Momentum>
ReferenceStep rmsprop(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &alpha = a.h("alpha");
  const Tensor g = a.decayed_grad();
  TensorVector states{alpha * a.states[0] + (1 - alpha) * g * g};
  Tensor w = states[0];
  if (Centered) {
    states.push_back(alpha * a.states[1] + (1 - alpha) * g);
    w = w - states[1] * states[1];
  }
  const Tensor ratio = g / (w.sqrt() + a.options.at("eps"));
  if (!Momentum) return {-lr * ratio, states};
  const Tensor& momentum = a.h("momentum");
  states.push_back(momentum * a.states[Centered ? 2 : 1] + ratio);
  const Tensor& buf = states.back();
  // Nesterov as optax's rmsprop (torch.optim.RMSprop has none).
  return {a.flag("nesterov") ? -lr * (ratio + momentum * buf) : -lr * buf, states};
}

inline ReferenceStep sgd(const ReferenceArgs& a) { return {-a.h("lr") * a.decayed_grad(), {}}; }

inline ReferenceStep sgd_momentum(const ReferenceArgs& a) {
  const Tensor &lr = a.h("lr"), &momentum = a.h("momentum"), &dampening = a.h("dampening");
  const Tensor g = a.decayed_grad();
  const Tensor buf = a.t == 1 ? g : momentum * a.states[0] + (1 - dampening) * g;
  return {-lr * (a.flag("nesterov") ? g + momentum * buf : buf), {buf}};
}

}  // namespace reference

// The reference step of operator `op` (whose hyperparameters and options are
// named by `hyper_names` and `option_names`, in its order) for one tensor.
inline ReferenceStep reference_step(const std::string& op,
                                    const std::vector<std::string>& hyper_names,
                                    const std::vector<std::string>& option_names, const Tensor& g,
                                    const TensorVector& states, const Tensor& p,
                                    const TensorVector& hyper, const std::vector<double>& options,
                                    double t) {
  using Step = std::function<ReferenceStep(const ReferenceArgs&)>;
  static const std::map<std::string, Step> steps = {
      {"adam", reference::adam<false, false>},
      {"adamw", reference::adam<true, false>},
      {"adam_amsgrad", reference::adam<false, true>},
      {"adamw_amsgrad", reference::adam<true, true>},
      {"adamax", reference::adamax},
      {"adan", reference::adan},
      {"radam", reference::radam},
      {"nadam", reference::nadam},
      {"adadelta", reference::adadelta},
      {"adagrad", reference::adagrad},
      {"lion", reference::lion},
      {"rmsprop", reference::rmsprop<false, false>},
      {"rmsprop_centered", reference::rmsprop<true, false>},
      {"rmsprop_momentum", reference::rmsprop<false, true>},
      {"rmsprop_centered_momentum", reference::rmsprop<true, true>},
      {"sgd", reference::sgd},
      {"sgd_momentum", reference::sgd_momentum}};
  const auto it = steps.find(op);
  if (it == steps.end()) {
    ADD_FAILURE() << op << " has no reference step here";
    return {};
  }
  ReferenceArgs args{g, states, p.defined() ? p : at::zeros_like(g), {}, {}, t};
  for (size_t i = 0; i < hyper_names.size(); ++i) args.hyper[hyper_names[i]] = hyper[i];
  for (size_t i = 0; i < option_names.size(); ++i) args.options[option_names[i]] = options[i];
  return it->second(args);
}

}  // namespace unrollopt::testing
