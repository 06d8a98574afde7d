// Autograd kernels of the unrollopt::adam* operators.
//
// adam: a custom autograd Function whose backward calls adam_backward.
// adam_backward: the fused kernel when nothing needs its gradient; otherwise the
//   same math on tensors (adam_math.h), which autograd differentiates again.
// adam_: not differentiable; refuses inputs that require grad under grad mode.

#include <ATen/TensorOperators.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "adam_math.h"
#include "unrollopt/ops.h"

namespace unrollopt {

namespace math {
at::Tensor constant(const at::Tensor& like, double v) {
  return at::scalar_tensor(v, like.options());
}
at::Tensor sqrt(const at::Tensor& x) { return x.sqrt(); }
at::Tensor reciprocal(const at::Tensor& x) { return x.reciprocal(); }
at::Tensor pow(const at::Tensor& x, const at::Tensor& y) { return x.pow(y); }
at::Tensor where_zero(const at::Tensor& x, double a, const at::Tensor& b) {
  return b.where(x != 0, at::Scalar(a));
}
}  // namespace math

namespace {

using ops::TensorVector;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;

// --- adam_backward -----------------------------------------------------------

bool any_requires_grad(std::initializer_list<at::TensorList> lists,
                       std::initializer_list<const OptionalTensors*> optional_lists) {
  for (const auto& list : lists) {
    for (const auto& t : list) {
      if (t.defined() && t.requires_grad()) return true;
    }
  }
  for (const auto* list : optional_lists) {
    for (const std::optional<at::Tensor>& t : *list) {
      if (t.has_value() && t->defined() && t->requires_grad()) return true;
    }
  }
  return false;
}

// The vector-Jacobian product in differentiable tensor ops (half and bfloat16
// computed in float32, as in the fused kernel).
ops::AdamBackwardResult adam_backward_composite(
    const OptionalTensors& grad_updates, const OptionalTensors& grad_mus,
    const OptionalTensors& grad_nus, at::TensorList grads, at::TensorList mus,
    at::TensorList nus, at::TensorList params, const at::Tensor& step, const at::Tensor& lr,
    const at::Tensor& beta1, const at::Tensor& beta2, const at::Tensor& weight_decay,
    double eps, double eps_root, bool maximize, std::array<bool, 8> mask) {
  // Coefficients in float64 whatever the hyperparameters' dtype, as in the kernel.
  const auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const auto coef = adam_coef<at::Tensor>(f64(lr), f64(beta1), f64(beta2), f64(weight_decay),
                                          step, eps, eps_root, maximize);
  ops::AdamBackwardResult out;
  auto& [grad_g, grad_m, grad_v, grad_p, grad_lr, grad_b1, grad_b2, grad_wd] = out;
  at::Tensor sums[4] = {lr.new_zeros({}, at::kDouble), lr.new_zeros({}, at::kDouble),
                        lr.new_zeros({}, at::kDouble), lr.new_zeros({}, at::kDouble)};
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::ScalarType dtype = grads[i].scalar_type();
    const at::ScalarType compute =
        (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
    const auto up = [&](const at::Tensor& t) { return t.to(compute); };
    const auto cotangent = [&](const OptionalTensors& list) {
      const std::optional<at::Tensor> t = list[i];
      return t.has_value() && t->defined() ? up(*t) : at::zeros_like(grads[i], compute);
    };
    const at::Tensor p = params.empty() ? at::zeros_like(grads[i], compute) : up(params[i]);
    const auto r = adam_vjp(cotangent(grad_updates), cotangent(grad_mus), cotangent(grad_nus),
                            up(grads[i]), up(mus[i]), up(nus[i]), p, coef);
    if (mask[0]) grad_g.push_back(r.g.to(dtype));
    if (mask[1]) grad_m.push_back(r.mu.to(dtype));
    if (mask[2]) grad_v.push_back(r.nu.to(dtype));
    if (mask[3]) grad_p.push_back(r.p.to(dtype));
    const at::Tensor* terms[4] = {&r.lr, &r.beta1, &r.beta2, &r.weight_decay};
    for (int h = 0; h < 4; ++h) {
      if (mask[4 + h]) sums[h] = sums[h] + terms[h]->sum(at::kDouble);
    }
  }
  grad_lr = sums[0].to(lr.scalar_type());
  grad_b1 = sums[1].to(beta1.scalar_type());
  grad_b2 = sums[2].to(beta2.scalar_type());
  grad_wd = sums[3].to(weight_decay.scalar_type());
  return out;
}

ops::AdamBackwardResult adam_backward_autograd(
    const OptionalTensors& grad_updates, const OptionalTensors& grad_mus,
    const OptionalTensors& grad_nus, at::TensorList grads, at::TensorList mus,
    at::TensorList nus, at::TensorList params, const at::Tensor& step, const at::Tensor& lr,
    const at::Tensor& beta1, const at::Tensor& beta2, const at::Tensor& weight_decay,
    double eps, double eps_root, bool maximize, std::array<bool, 8> mask) {
  if (at::GradMode::is_enabled() &&
      any_requires_grad({grads, mus, nus, params, {lr, beta1, beta2, weight_decay}},
                        {&grad_updates, &grad_mus, &grad_nus})) {
    return adam_backward_composite(grad_updates, grad_mus, grad_nus, grads, mus, nus, params,
                                   step, lr, beta1, beta2, weight_decay, eps, eps_root,
                                   maximize, mask);
  }
  at::AutoDispatchBelowADInplaceOrView guard;
  return ops::adam_backward(grad_updates, grad_mus, grad_nus, grads, mus, nus, params, step,
                            lr, beta1, beta2, weight_decay, eps, eps_root, maximize, mask);
}

// --- adam --------------------------------------------------------------------

template <class T>
void append(std::vector<T>& to, at::TensorList from) {
  to.insert(to.end(), from.begin(), from.end());
}

struct AdamFunction : public torch::autograd::Function<AdamFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList grads, at::TensorList mus,
                               at::TensorList nus, at::TensorList params,
                               const at::Tensor& step, const at::Tensor& lr,
                               const at::Tensor& beta1, const at::Tensor& beta2,
                               const at::Tensor& weight_decay, double eps, double eps_root,
                               bool maximize) {
    ctx->set_materialize_grads(false);
    auto [update, mu, nu] = [&] {
      at::AutoDispatchBelowADInplaceOrView guard;
      return ops::adam(grads, mus, nus, params, step, lr, beta1, beta2, weight_decay, eps,
                       eps_root, maximize);
    }();
    // The backward recomputes mu', nu' and the update from the inputs, so it
    // saves nothing the forward did not already hold.
    variable_list saved;
    append(saved, grads);
    append(saved, mus);
    append(saved, nus);
    append(saved, params);
    append(saved, {step, lr, beta1, beta2, weight_decay});
    ctx->save_for_backward(saved);
    ctx->saved_data["n"] = static_cast<int64_t>(grads.size());
    ctx->saved_data["n_params"] = static_cast<int64_t>(params.size());
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["eps_root"] = eps_root;
    ctx->saved_data["maximize"] = maximize;
    variable_list out;
    append(out, update);
    append(out, mu);
    append(out, nu);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const int64_t n = ctx->saved_data["n"].toInt();
    const int64_t n_params = ctx->saved_data["n_params"].toInt();
    const variable_list saved = ctx->get_saved_variables();
    const at::TensorList all(saved);
    const auto slice = [&](int64_t k, int64_t len) { return all.slice(k * n, len); };
    const at::TensorList params = all.slice(3 * n, n_params);
    const int64_t h = 3 * n + n_params;  // step, lr, beta1, beta2, weight_decay
    const auto cotangents = [&](int64_t k) {
      OptionalTensors list;
      for (int64_t i = 0; i < n; ++i) list.push_back(grad_out[k * n + i]);
      return list;
    };
    const auto needs = [&](int64_t begin, int64_t len) {
      for (int64_t i = begin; i < begin + len; ++i) {
        if (ctx->needs_input_grad(i)) return true;
      }
      return false;
    };
    const std::array<bool, 8> mask{needs(0, n),      needs(n, n),      needs(2 * n, n),
                                   needs(3 * n, n_params), needs(h + 1, 1), needs(h + 2, 1),
                                   needs(h + 3, 1),  needs(h + 4, 1)};
    auto [grad_g, grad_m, grad_v, grad_p, grad_lr, grad_b1, grad_b2, grad_wd] =
        ops::adam_backward(cotangents(0), cotangents(1), cotangents(2), slice(0, n),
                           slice(1, n), slice(2, n), params, all[h], all[h + 1], all[h + 2],
                           all[h + 3], all[h + 4], ctx->saved_data["eps"].toDouble(),
                           ctx->saved_data["eps_root"].toDouble(),
                           ctx->saved_data["maximize"].toBool(), mask);
    variable_list result;
    const auto emit = [&](const TensorVector& list, int64_t len) {
      for (int64_t i = 0; i < len; ++i) {
        result.push_back(list.empty() ? at::Tensor() : list[i]);
      }
    };
    emit(grad_g, n);
    emit(grad_m, n);
    emit(grad_v, n);
    emit(grad_p, n_params);
    result.push_back(at::Tensor());  // step
    result.push_back(mask[4] ? grad_lr : at::Tensor());
    result.push_back(mask[5] ? grad_b1 : at::Tensor());
    result.push_back(mask[6] ? grad_b2 : at::Tensor());
    result.push_back(mask[7] ? grad_wd : at::Tensor());
    result.resize(result.size() + 3);  // eps, eps_root, maximize
    return result;
  }
};

std::tuple<TensorVector, TensorVector, TensorVector> adam_autograd(
    at::TensorList grads, at::TensorList mus, at::TensorList nus, at::TensorList params,
    const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
    const at::Tensor& beta2, const at::Tensor& weight_decay, double eps, double eps_root,
    bool maximize) {
  const variable_list out = AdamFunction::apply(grads, mus, nus, params, step, lr, beta1,
                                                beta2, weight_decay, eps, eps_root, maximize);
  const auto n = static_cast<int64_t>(grads.size());
  const at::TensorList all(out);
  return {all.slice(0, n).vec(), all.slice(n, n).vec(), all.slice(2 * n, n).vec()};
}

// --- adam_ -------------------------------------------------------------------

void adam_inplace_autograd(at::TensorList params, at::TensorList grads, at::TensorList mus,
                           at::TensorList nus, const at::Tensor& step, const at::Tensor& lr,
                           const at::Tensor& beta1, const at::Tensor& beta2,
                           const at::Tensor& weight_decay, double eps, double eps_root,
                           bool maximize, bool update_params) {
  TORCH_CHECK(!at::GradMode::is_enabled() ||
                  !any_requires_grad({params, grads, mus, nus, {lr, beta1, beta2, weight_decay}},
                                     {}),
              "unrollopt.adam_ updates tensors in place and is not differentiable, but an "
              "input requires grad. For a differentiable step use the out-of-place "
              "unrollopt.adam (update(..., inplace=False)); for a plain optimizer step run "
              "under torch.no_grad().");
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    ops::adam_(params, grads, mus, nus, step, lr, beta1, beta2, weight_decay, eps, eps_root,
               maximize, update_params);
  }
  for (at::TensorList list : {update_params ? params : grads, mus, nus}) {
    for (const auto& t : list) torch::autograd::impl::bump_version(t);
  }
}

}  // namespace
}  // namespace unrollopt

TORCH_LIBRARY_IMPL(unrollopt, Autograd, m) {
  m.impl("adam", TORCH_FN(unrollopt::adam_autograd));
  m.impl("adam_", TORCH_FN(unrollopt::adam_inplace_autograd));
  m.impl("adam_backward", TORCH_FN(unrollopt::adam_backward_autograd));
}
