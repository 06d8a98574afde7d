// The unrollopt::adam* operators: schemas, input checks, CPU and Meta kernels.
// (Autograd kernels are in adam_autograd.cpp.)

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/kernels.h"
#include "unrollopt/ops.h"

namespace unrollopt {
namespace {

using ops::TensorVector;
using AdamBackwardOutputs = ops::AdamBackwardResult;

struct AdamArgs {
  at::TensorList grads, mus, nus, params;
  const at::Tensor &step, &lr, &beta1, &beta2, &weight_decay;
};

void check_adam(const AdamArgs& a, const char* op) {
  check_parameter_lists(op, a.grads, {{"mus", a.mus}, {"nus", a.nus}}, a.params);
  check_hyperparameter(op, "step", a.step);
  check_hyperparameter(op, "lr", a.lr);
  check_hyperparameter(op, "beta1", a.beta1);
  check_hyperparameter(op, "beta2", a.beta2);
  check_hyperparameter(op, "weight_decay", a.weight_decay);
}

cpu::AdamScalars read_scalars(const AdamArgs& a, double eps, double eps_root, bool maximize) {
  return {a.lr.item<double>(),           a.beta1.item<double>(), a.beta2.item<double>(),
          a.weight_decay.item<double>(), a.step.item<double>(),  eps,
          eps_root,                      maximize};
}

TensorVector contiguous(at::TensorList list) {
  TensorVector out;
  out.reserve(list.size());
  for (const auto& t : list) out.push_back(t.defined() ? t.contiguous() : t);
  return out;
}

TensorVector contiguous(const c10::List<std::optional<at::Tensor>>& list) {
  TensorVector out;
  out.reserve(list.size());
  for (const std::optional<at::Tensor>& t : list) {
    out.push_back(t.has_value() && t->defined() ? t->contiguous() : at::Tensor());
  }
  return out;
}

TensorVector empty_like_all(at::TensorList list) {
  TensorVector out;
  out.reserve(list.size());
  for (const auto& t : list) out.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  return out;
}

// Writes back into `targets` where the kernel worked on contiguous copies.
void copy_back(at::TensorList targets, at::TensorList worked) {
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].is_same(worked[i])) targets[i].copy_(worked[i]);
  }
}

// --- unrollopt::adam ---------------------------------------------------------

std::tuple<TensorVector, TensorVector, TensorVector> adam_meta(
    at::TensorList grads, at::TensorList mus, at::TensorList nus, at::TensorList params,
    const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
    const at::Tensor& beta2, const at::Tensor& weight_decay, double, double, bool) {
  check_adam({grads, mus, nus, params, step, lr, beta1, beta2, weight_decay}, "adam");
  return {empty_like_all(grads), empty_like_all(grads), empty_like_all(grads)};
}

std::tuple<TensorVector, TensorVector, TensorVector> adam_cpu(
    at::TensorList grads, at::TensorList mus, at::TensorList nus, at::TensorList params,
    const at::Tensor& step, const at::Tensor& lr, const at::Tensor& beta1,
    const at::Tensor& beta2, const at::Tensor& weight_decay, double eps, double eps_root,
    bool maximize) {
  const AdamArgs a{grads, mus, nus, params, step, lr, beta1, beta2, weight_decay};
  check_adam(a, "adam");
  const auto hp = read_scalars(a, eps, eps_root, maximize);
  const TensorVector g = contiguous(grads), m = contiguous(mus), v = contiguous(nus),
                     p = contiguous(params);
  TensorVector update = empty_like_all(g), mu = empty_like_all(g), nu = empty_like_all(g);
  cpu::kernels().adam_forward({g, m, v, p}, update, mu, nu, /*add_to_param=*/false, hp);
  return {std::move(update), std::move(mu), std::move(nu)};
}

// --- unrollopt::adam_ --------------------------------------------------------

void check_adam_inplace(const AdamArgs& a, bool update_params) {
  check_adam(a, "adam_");
  TORCH_CHECK_VALUE(!update_params || !a.params.empty(),
                    "unrollopt.adam_: update_params=True needs params (got an empty list)");
  if (update_params) {
    check_writable("adam_", "params", a.params);
  } else {
    check_writable("adam_", "grads", a.grads);
  }
  check_writable("adam_", "mus", a.mus);
  check_writable("adam_", "nus", a.nus);
}

void adam_inplace_meta(at::TensorList params, at::TensorList grads, at::TensorList mus,
                       at::TensorList nus, const at::Tensor& step, const at::Tensor& lr,
                       const at::Tensor& beta1, const at::Tensor& beta2,
                       const at::Tensor& weight_decay, double, double, bool,
                       bool update_params) {
  check_adam_inplace({grads, mus, nus, params, step, lr, beta1, beta2, weight_decay},
                     update_params);
}

void adam_inplace_cpu(at::TensorList params, at::TensorList grads, at::TensorList mus,
                      at::TensorList nus, const at::Tensor& step, const at::Tensor& lr,
                      const at::Tensor& beta1, const at::Tensor& beta2,
                      const at::Tensor& weight_decay, double eps, double eps_root,
                      bool maximize, bool update_params) {
  const AdamArgs a{grads, mus, nus, params, step, lr, beta1, beta2, weight_decay};
  check_adam_inplace(a, update_params);
  const auto hp = read_scalars(a, eps, eps_root, maximize);
  const TensorVector g = contiguous(grads), m = contiguous(mus), v = contiguous(nus),
                     p = contiguous(params);
  const TensorVector& first_out = update_params ? p : g;
  cpu::kernels().adam_forward({g, m, v, p}, first_out, m, v, /*add_to_param=*/update_params,
                              hp);
  copy_back(update_params ? params : grads, first_out);
  copy_back(mus, m);
  copy_back(nus, v);
}

// --- unrollopt::adam_backward ------------------------------------------------

void check_cotangents(const c10::List<std::optional<at::Tensor>>& list, const char* name,
                      at::TensorList grads) {
  TORCH_CHECK_VALUE(list.size() == grads.size(), "unrollopt.adam_backward: ", name, " has ",
                    list.size(), " entries but grads has ", grads.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const std::optional<at::Tensor> t = list[i];
    if (t.has_value() && t->defined()) check_like("adam_backward", name, i, *t, grads[i]);
  }
}

AdamBackwardOutputs adam_backward_outputs(const AdamArgs& a, std::array<bool, 8> mask) {
  TORCH_CHECK_VALUE(!mask[3] || !a.params.empty(),
                    "unrollopt.adam_backward: the gradient of params needs params");
  const auto lists = [&](int i) { return mask[i] ? empty_like_all(a.grads) : TensorVector{}; };
  const auto scalar = [](const at::Tensor& like) { return at::empty({}, like.options()); };
  return {lists(0),     lists(1),        lists(2),        lists(3),
          scalar(a.lr), scalar(a.beta1), scalar(a.beta2), scalar(a.weight_decay)};
}

// Checks the inputs and allocates the outputs; the CPU kernel starts here too.
AdamBackwardOutputs adam_backward_meta(
    const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_mus,
    const c10::List<std::optional<at::Tensor>>& grad_nus, at::TensorList grads,
    at::TensorList mus, at::TensorList nus, at::TensorList params, const at::Tensor& step,
    const at::Tensor& lr, const at::Tensor& beta1, const at::Tensor& beta2,
    const at::Tensor& weight_decay, double, double, bool, std::array<bool, 8> output_mask) {
  const AdamArgs a{grads, mus, nus, params, step, lr, beta1, beta2, weight_decay};
  check_adam(a, "adam_backward");
  check_cotangents(grad_updates, "grad_updates", grads);
  check_cotangents(grad_mus, "grad_mus", grads);
  check_cotangents(grad_nus, "grad_nus", grads);
  return adam_backward_outputs(a, output_mask);
}

AdamBackwardOutputs adam_backward_cpu(
    const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_mus,
    const c10::List<std::optional<at::Tensor>>& grad_nus, at::TensorList grads,
    at::TensorList mus, at::TensorList nus, at::TensorList params, const at::Tensor& step,
    const at::Tensor& lr, const at::Tensor& beta1, const at::Tensor& beta2,
    const at::Tensor& weight_decay, double eps, double eps_root, bool maximize,
    std::array<bool, 8> output_mask) {
  AdamBackwardOutputs out = adam_backward_meta(
      grad_updates, grad_mus, grad_nus, grads, mus, nus, params, step, lr, beta1, beta2,
      weight_decay, eps, eps_root, maximize, output_mask);
  const AdamArgs a{grads, mus, nus, params, step, lr, beta1, beta2, weight_decay};
  const auto hp = read_scalars(a, eps, eps_root, maximize);
  const bool need_hyper = output_mask[4] || output_mask[5] || output_mask[6] || output_mask[7];
  double hyper[4] = {0, 0, 0, 0};
  cpu::kernels().adam_backward(contiguous(grad_updates), contiguous(grad_mus),
                               contiguous(grad_nus),
                               {contiguous(grads), contiguous(mus), contiguous(nus),
                                contiguous(params)},
                               std::get<0>(out), std::get<1>(out), std::get<2>(out),
                               std::get<3>(out), hp, need_hyper ? hyper : nullptr);
  std::get<4>(out).fill_(output_mask[4] ? hyper[0] : 0.0);
  std::get<5>(out).fill_(output_mask[5] ? hyper[1] : 0.0);
  std::get<6>(out).fill_(output_mask[6] ? hyper[2] : 0.0);
  std::get<7>(out).fill_(output_mask[7] ? hyper[3] : 0.0);
  return out;
}

}  // namespace
}  // namespace unrollopt

TORCH_LIBRARY(unrollopt, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def(
      "adam(Tensor[] grads, Tensor[] mus, Tensor[] nus, Tensor[] params, Tensor step, "
      "Tensor lr, Tensor beta1, Tensor beta2, Tensor weight_decay, float eps, float eps_root, "
      "bool maximize) -> (Tensor[], Tensor[], Tensor[])",
      tags);
  m.def(
      "adam_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] mus, Tensor(d!)[] nus, "
      "Tensor step, Tensor lr, Tensor beta1, Tensor beta2, Tensor weight_decay, float eps, "
      "float eps_root, bool maximize, bool update_params) -> ()",
      tags);
  m.def(
      "adam_backward(Tensor?[] grad_updates, Tensor?[] grad_mus, Tensor?[] grad_nus, "
      "Tensor[] grads, Tensor[] mus, Tensor[] nus, Tensor[] params, Tensor step, Tensor lr, "
      "Tensor beta1, Tensor beta2, Tensor weight_decay, float eps, float eps_root, "
      "bool maximize, bool[8] output_mask) -> (Tensor[], Tensor[], Tensor[], Tensor[], "
      "Tensor, Tensor, Tensor, Tensor)",
      tags);
}

TORCH_LIBRARY_IMPL(unrollopt, CPU, m) {
  m.impl("adam", TORCH_FN(unrollopt::adam_cpu));
  m.impl("adam_", TORCH_FN(unrollopt::adam_inplace_cpu));
  m.impl("adam_backward", TORCH_FN(unrollopt::adam_backward_cpu));
}

TORCH_LIBRARY_IMPL(unrollopt, Meta, m) {
  m.impl("adam", TORCH_FN(unrollopt::adam_meta));
  m.impl("adam_", TORCH_FN(unrollopt::adam_inplace_meta));
  m.impl("adam_backward", TORCH_FN(unrollopt::adam_backward_meta));
}
