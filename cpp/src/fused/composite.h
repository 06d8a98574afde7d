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

#include "arguments.h"
#include "unrollopt/rules/math_ops.h"

namespace unrollopt::fused {

// How the step hands its tensors to the rule: all at once, each flattened and
// concatenated, where they are several, small (2^14 elements each on average)
// and of one dtype and device; otherwise one at a time. Concatenated, the ATen
// operations, and their autograd nodes, number those of one tensor instead of
// n tensors': the per-call cost is what the step of a small model takes. Not
// where torch.compile traces the step: Inductor fuses each tensor's operations
// with the computations around them, which the copies into and out of a
// concatenation would stop (measured: MAML Adam's compiled iteration 1.3x
// slower, docs/benchmarks.md section 15). (fused_op.cpp)
class Batches {
 public:
  // `like`: the gradients, one per parameter.
  explicit Batches(at::TensorList like);
  // 1 where concatenated, else one per tensor.
  size_t size() const { return joined_ ? 1 : like_.size(); }
  // Batch b of `list` (a tensor per gradient, in their order) in its compute
  // type (float32 for half and bfloat16): an undefined tensor is zeros, an
  // empty list a 0-d zero (which the rule's terms broadcast: no parameters).
  at::Tensor in(at::TensorList list, size_t b) const;
  // Appends the rule's result for batch b to `out`: tensors shaped as the
  // gradients, in their dtypes (copies, not views).
  void out(const at::Tensor& result, size_t b, TensorVector& out) const;

 private:
  at::TensorList like_;
  bool joined_;
};

template <class Rule>
struct Composite {
  using A = Arguments<Rule>;
  static constexpr size_t NS = A::NS;
  static constexpr size_t NH = A::NH;
  static constexpr size_t NC = A::NC;

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
    const auto st = A::split(states, grads.size());
    const Batches batches(grads);
    ForwardResult out;
    auto& [update, new_states] = out;
    std::array<TensorVector, NS> state_lists;
    for (size_t b = 0; b < batches.size(); ++b) {
      std::array<at::Tensor, NS> state;
      for (size_t k = 0; k < NS; ++k) state[k] = batches.in(st[k], b);
      const auto r = Rule::forward(batches.in(grads, b), state, batches.in(params, b), coef);
      batches.out(r[0], b, update);
      for (size_t k = 0; k < NS; ++k) batches.out(r[1 + k], b, state_lists[k]);
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
    const Batches batches(grads);
    BackwardResult out;
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    std::array<TensorVector, NS> grad_s_lists;
    std::array<at::Tensor, NC> coef_sums;
    for (size_t b = 0; b < batches.size(); ++b) {
      std::array<at::Tensor, NS> g_state, state;
      for (size_t k = 0; k < NS; ++k) {
        g_state[k] = batches.in(at::TensorList(gs).slice(k * n, n), b);
        state[k] = batches.in(st[k], b);
      }
      const auto r = Rule::vjp(batches.in(gu, b), g_state, batches.in(grads, b), state,
                               batches.in(params, b), coef);
      if (mask[0]) batches.out(r.g, b, grad_g);
      for (size_t k = 0; k < NS && mask[1]; ++k) batches.out(r.states[k], b, grad_s_lists[k]);
      if (mask[2]) batches.out(r.p, b, grad_p);
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
