#pragma once
// A rule's step and its vector-Jacobian product in differentiable ATen ops
// (the rule's own forward and vjp on at::Tensor, coefficients in float64 from
// the hyperparameters; half and bfloat16 computed in float32, as in the fused
// kernels). Their derivatives come from aten: the step is NAME_plain, the plain
// path (fused_op.h), and the Autograd kernels (autograd.h) run it for forward
// mode (jvp, jacfwd) and the vjp to differentiate the backward (second order).

#include <array>
#include <string>
#include <string_view>

#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "arguments.h"
#include "unrollopt/rules/math_ops.h"

namespace unrollopt::fused {

// The step runs once on its tensors concatenated (each flattened) where they
// are several, small (2^14 elements each on average) and of one dtype: the
// ATen operations, and their autograd nodes, then number those of one tensor
// instead of one tensor's times n (whose per-call cost is what the step of a
// small model takes). Not where torch.compile traces it: Inductor fuses the
// operations of each tensor itself, and a concatenation would be copies for it
// to keep. (fused_op.cpp)
bool concatenates(at::TensorList grads);
// The tensors flattened and concatenated, in `dtype`.
at::Tensor concatenated(at::TensorList list, at::ScalarType dtype);
// `flat` split into tensors shaped as `like`'s (copies, not views).
TensorVector split_like(const at::Tensor& flat, at::TensorList like);

template <class Rule>
struct Composite {
  using A = Arguments<Rule>;
  static constexpr size_t NS = A::NS;
  static constexpr size_t NH = A::NH;
  static constexpr size_t NC = A::NC;

  // The parameters where none are given (no weight decay): a 0-d zero, which
  // the step's terms broadcast (a tensor of zeros would cost passes over it).
  static at::Tensor no_params(const at::Tensor& g) { return at::zeros({}, g.options()); }

  // Where the fused kernels compute a dtype in.
  static at::ScalarType compute_type(at::ScalarType dtype) {
    return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
  }

  // NAME_next_SCALAR: the rule's scalar state after `step`, its previous value
  // (a hyperparameter) times the step's factor (computed in float64) in the
  // previous value's dtype: torch.optim.NAdam's arithmetic for mu_product.
  static at::Tensor next_scalar(const at::Tensor& step, at::TensorList hyper,
                                c10::ArrayRef<double> options)
    requires requires { Rule::scalar; }
  {
    static const std::string name = std::string(Rule::name) + "_next_" + Rule::scalar.name;
    A::check_scalars(name.c_str(), step, hyper);
    std::array<at::Tensor, NH> h;
    at::Tensor previous;
    for (size_t i = 0; i < NH; ++i) {
      h[i] = hyper[i].to(at::kDouble);
      if (std::string_view(Rule::hyperparameters[i]) == Rule::scalar.name) previous = hyper[i];
    }
    const at::Tensor factor = Rule::template scalar_factor<at::Tensor>(
        h, step.to(at::kDouble), Rule::Options::read(options));
    return previous * factor.to(previous.scalar_type());
  }

  // NAME: the update and the new states.
  static ForwardResult forward(at::TensorList grads, at::TensorList states, at::TensorList params,
                               const at::Tensor& step, at::TensorList hyper,
                               c10::ArrayRef<double> options) {
    A::check(Rule::name, grads, states, params, step, hyper);
    A::check_decay_params(hyper, params);
    std::array<at::Tensor, NH> h;
    for (size_t i = 0; i < NH; ++i) h[i] = hyper[i].to(at::kDouble);
    const auto coef =
        Rule::template coef<at::Tensor>(h, step.to(at::kDouble), Rule::Options::read(options));
    const size_t n = grads.size();
    const auto st = A::split(states, n);
    ForwardResult out;
    auto& [update, new_states] = out;
    if (concatenates(grads)) {
      const at::ScalarType dtype = grads[0].scalar_type();
      const at::ScalarType compute = compute_type(dtype);
      std::array<at::Tensor, NS> state;
      for (size_t k = 0; k < NS; ++k) state[k] = concatenated(st[k], compute);
      const at::Tensor g = concatenated(grads, compute);
      const auto r = Rule::forward(
          g, state, params.empty() ? no_params(g) : concatenated(params, compute), coef);
      update = split_like(r[0].to(dtype), grads);
      for (size_t k = 0; k < NS; ++k) {
        const TensorVector list = split_like(r[1 + k].to(dtype), grads);
        new_states.insert(new_states.end(), list.begin(), list.end());
      }
      return out;
    }
    std::array<TensorVector, NS> state_lists;
    for (size_t i = 0; i < n; ++i) {
      const at::ScalarType dtype = grads[i].scalar_type();
      const at::ScalarType compute = compute_type(dtype);
      std::array<at::Tensor, NS> state;
      for (size_t k = 0; k < NS; ++k) state[k] = st[k][i].to(compute);
      const at::Tensor g = grads[i].to(compute);
      const auto r =
          Rule::forward(g, state, params.empty() ? no_params(g) : params[i].to(compute), coef);
      update.push_back(r[0].to(dtype));
      for (size_t k = 0; k < NS; ++k) state_lists[k].push_back(r[1 + k].to(dtype));
    }
    for (const auto& list : state_lists)
      new_states.insert(new_states.end(), list.begin(), list.end());
    return out;
  }

  // NAME_backward: the cotangents of grads, states, params and each
  // hyperparameter, as `mask` selects (fused_op.h).
  static BackwardResult backward(const OptionalTensors& grad_updates,
                                 const OptionalTensors& grad_states, at::TensorList grads,
                                 at::TensorList states, at::TensorList params,
                                 const at::Tensor& step, at::TensorList hyper,
                                 c10::ArrayRef<double> options, const c10::List<bool>& mask) {
    const size_t n = grads.size();
    const DualCoef dual = dual_coefficients(step, hyper, options, mask);
    std::array<at::Tensor, NC> coef;
    for (size_t j = 0; j < NC; ++j) coef[j] = dual[j].value;
    const std::array<bool, NC> needed = coefficients_needed(dual);
    const auto st = A::split(states, n);
    const TensorVector gu = as_vector(grad_updates), gs = as_vector(grad_states);
    BackwardResult out;
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    std::array<TensorVector, NS> grad_s_lists;
    std::array<at::Tensor, NC> coef_sums;
    for (size_t i = 0; i < n; ++i) {
      const at::ScalarType dtype = grads[i].scalar_type();
      const auto r = vjp_of_tensor(i, gu, gs, grads, st, params, coef);
      if (mask[0]) grad_g.push_back(r.g.to(dtype));
      for (size_t k = 0; k < NS && mask[1]; ++k) grad_s_lists[k].push_back(r.states[k].to(dtype));
      if (mask[2]) grad_p.push_back(r.p.to(dtype));
      for (size_t j = 0; j < NC; ++j) {
        if (!needed[j]) continue;
        const at::Tensor term = r.coef[j].sum(at::kDouble);
        coef_sums[j] = coef_sums[j].defined() ? coef_sums[j] + term : term;
      }
    }
    for (const auto& list : grad_s_lists) grad_s.insert(grad_s.end(), list.begin(), list.end());
    grad_h = chain_to_hyperparameters(coef_sums, dual, hyper, mask);
    return out;
  }

 private:
  using DualTensor = math::Dual<at::Tensor, NH>;
  using DualCoef = std::array<DualTensor, NC>;

  // The coefficients and their derivatives with respect to the
  // hyperparameters whose gradients `mask` wants, as differentiable tensors
  // (forward mode, no autograd call; the others' derivatives are not computed).
  static DualCoef dual_coefficients(const at::Tensor& step, at::TensorList hyper,
                                    c10::ArrayRef<double> options, const c10::List<bool>& mask) {
    std::array<DualTensor, NH> h;
    for (size_t i = 0; i < NH; ++i) {
      const at::Tensor value = hyper[i].to(at::kDouble);
      h[i] = mask[3 + i] ? DualTensor::variable(value, i) : DualTensor(value, {});
    }
    return Rule::template coef<DualTensor>(h, DualTensor(step.to(at::kDouble), {}),
                                           Rule::Options::read(options));
  }

  // Only the cotangents of coefficients that depend on a wanted hyperparameter
  // are summed: those with a derivative (dual_coefficients computes only the
  // wanted ones; an undefined derivative is 0).
  static std::array<bool, NC> coefficients_needed(const DualCoef& dual) {
    std::array<bool, NC> needed{};
    for (size_t j = 0; j < NC; ++j) {
      for (size_t i = 0; i < NH; ++i) needed[j] = needed[j] || dual[j].grad[i].defined();
    }
    return needed;
  }

  // The rule's vjp for the i-th tensor, in its compute type; an undefined
  // cotangent (or absent params) is zeros.
  static auto vjp_of_tensor(size_t i, const TensorVector& gu, const TensorVector& gs,
                            at::TensorList grads, const std::array<at::TensorList, NS>& st,
                            at::TensorList params, const std::array<at::Tensor, NC>& coef) {
    const size_t n = grads.size();
    const at::ScalarType compute = compute_type(grads[i].scalar_type());
    const auto up = [&](const at::Tensor& t) {
      return t.defined() ? t.to(compute) : at::zeros_like(grads[i], compute);
    };
    std::array<at::Tensor, NS> g_state, state;
    for (size_t k = 0; k < NS; ++k) {
      g_state[k] = up(gs[k * n + i]);
      state[k] = up(st[k][i]);
    }
    return Rule::vjp(up(gu[i]), g_state, up(grads[i]), state,
                     params.empty() ? up(at::Tensor()) : up(params[i]), coef);
  }

  // The hyperparameters' cotangents from the coefficients' (summed over
  // elements), through d coef / d hyperparameters; zeros where not wanted.
  static TensorVector chain_to_hyperparameters(const std::array<at::Tensor, NC>& coef_sums,
                                               const DualCoef& dual, at::TensorList hyper,
                                               const c10::List<bool>& mask) {
    TensorVector grad_h;
    for (size_t i = 0; i < NH; ++i) {
      at::Tensor total;
      for (size_t j = 0; j < NC && mask[3 + i]; ++j) {
        if (!coef_sums[j].defined() || !dual[j].grad[i].defined()) continue;
        const at::Tensor term = coef_sums[j] * dual[j].grad[i];
        total = total.defined() ? total + term : term;
      }
      grad_h.push_back(total.defined() ? total.to(hyper[i].scalar_type())
                                       : at::zeros({}, hyper[i].options()));
    }
    return grad_h;
  }
};

}  // namespace unrollopt::fused
