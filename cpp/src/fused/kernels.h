#pragma once
// The CPU, CUDA and Meta kernels of a rule's three operators (fused_op.h says
// what each computes): checks, contiguous inputs, fresh outputs, and the fused
// kernels of cpu/ and cuda/. The Meta kernels only check and allocate.

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "../../cuda/kernels.h"
#include "../cpu/kernels.h"
#include "arguments.h"

namespace unrollopt::fused {

template <class Rule>
struct Kernels {
  using A = Arguments<Rule>;
  static constexpr size_t NS = A::NS;
  static constexpr size_t NH = A::NH;
  using Lists = unrollopt::Lists<Rule>;

  // --- NAME --------------------------------------------------------------------

  static ForwardResult forward_meta(at::TensorList grads, at::TensorList states,
                                    at::TensorList params, const at::Tensor& step,
                                    at::TensorList hyper, c10::ArrayRef<double> options) {
    A::check(Rule::name, grads, states, params, step, hyper);
    Rule::Options::read(options);
    return {empty_like_all(grads), empty_like_all(states)};
  }

  template <bool Cuda>
  static ForwardResult forward_kernel(at::TensorList grads, at::TensorList states,
                                      at::TensorList params, const at::Tensor& step,
                                      at::TensorList hyper, c10::ArrayRef<double> options) {
    A::check(Rule::name, grads, states, params, step, hyper);
    if constexpr (Cuda) A::check_cuda(Rule::name, grads, step, hyper, params);
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    TensorVector update = empty_like_all(g), new_states = empty_like_all(st);
    const Lists in{g, A::split(st, g.size()), p};
    if constexpr (Cuda) {
      cuda::forward<Rule>(in, update, A::split(new_states, g.size()), /*add_to_param=*/false, step,
                          hyper, Rule::Options::read(options));
    } else {
      cpu::kernels<Rule>().forward(in, update, A::split(new_states, g.size()),
                                   /*add_to_param=*/false,
                                   A::values(step, hyper, options, params).kernel_scalars());
    }
    return {std::move(update), std::move(new_states)};
  }

  // --- NAME_ -------------------------------------------------------------------

  static void check_inplace(at::TensorList params, at::TensorList grads, at::TensorList states,
                            const at::Tensor& step, at::TensorList hyper,
                            c10::ArrayRef<double> options, bool update_params) {
    const std::string op = std::string(Rule::name) + "_";
    A::check(op.c_str(), grads, states, params, step, hyper);
    Rule::Options::read(options);
    TORCH_CHECK_VALUE(!update_params || !params.empty(), "unrollopt.", op,
                      ": update_params=True needs params (got an empty list)");
    check_writable(op.c_str(), update_params ? "params" : "grads", update_params ? params : grads);
    check_writable(op.c_str(), "states", states);
    const auto lists = A::split(states, grads.size());
    std::vector<NamedTensorList> written{
        {update_params ? "params" : "grads", update_params ? params : grads}};
    for (size_t k = 0; k < NS; ++k) written.emplace_back(Rule::states[k], lists[k]);
    const NamedTensorList read{update_params ? "grads" : "params", update_params ? grads : params};
    check_no_aliasing(op.c_str(), written, {read});
  }

  static void inplace_meta(at::TensorList params, at::TensorList grads, at::TensorList states,
                           const at::Tensor& step, at::TensorList hyper,
                           c10::ArrayRef<double> options, bool update_params) {
    check_inplace(params, grads, states, step, hyper, options, update_params);
  }

  template <bool Cuda>
  static void inplace_kernel(at::TensorList params, at::TensorList grads, at::TensorList states,
                             const at::Tensor& step, at::TensorList hyper,
                             c10::ArrayRef<double> options, bool update_params) {
    check_inplace(params, grads, states, step, hyper, options, update_params);
    if constexpr (Cuda) A::check_cuda(Rule::name, grads, step, hyper, params);
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    const TensorVector& first_out = update_params ? p : g;
    const Lists in{g, A::split(st, g.size()), p};
    if constexpr (Cuda) {
      cuda::forward<Rule>(in, first_out, A::split(st, g.size()), update_params, step, hyper,
                          Rule::Options::read(options));
    } else {
      cpu::kernels<Rule>().forward(in, first_out, A::split(st, g.size()), update_params,
                                   A::values(step, hyper, options, params).kernel_scalars());
    }
    copy_back(update_params ? params : grads, first_out);
    copy_back(states, st);
  }

  // --- NAME_backward -------------------------------------------------------------

  // Each cotangent list (grad_updates, then grad_<state>_out for each state,
  // one after another in grad_states) like the grads, each named.
  static void check_cotangents(const OptionalTensors& grad_updates,
                               const OptionalTensors& grad_states, at::TensorList grads) {
    const std::string op = std::string(Rule::name) + "_backward";
    const size_t n = grads.size();  // each list's size: checked by schema.cpp
    for (size_t k = 0; k <= NS; ++k) {
      const std::string name =
          k == 0 ? "grad_updates" : "grad_" + std::string(Rule::states[k - 1]) + "_out";
      for (size_t i = 0; i < n; ++i) {
        const std::optional<at::Tensor> t = k == 0 ? grad_updates[i] : grad_states[(k - 1) * n + i];
        if (t.has_value() && t->defined()) check_like(op.c_str(), name.c_str(), i, *t, grads[i]);
      }
    }
  }

  // Checks the inputs and allocates the outputs; the kernels start here too.
  static BackwardResult backward_meta(const OptionalTensors& grad_updates,
                                      const OptionalTensors& grad_states, at::TensorList grads,
                                      at::TensorList states, at::TensorList params,
                                      const at::Tensor& step, at::TensorList hyper,
                                      c10::ArrayRef<double> options, const c10::List<bool>& mask) {
    const std::string op = std::string(Rule::name) + "_backward";
    A::check(op.c_str(), grads, states, params, step, hyper);
    Rule::Options::read(options);
    check_cotangents(grad_updates, grad_states, grads);
    TORCH_CHECK_VALUE(!mask[2] || !params.empty(), "unrollopt.", op,
                      ": the gradient of params needs params");
    BackwardResult out;
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    if (mask[0]) grad_g = empty_like_all(grads);
    if (mask[1]) grad_s = empty_like_all(states);
    if (mask[2]) grad_p = empty_like_all(grads);
    for (size_t i = 0; i < NH; ++i) grad_h.push_back(at::zeros({}, hyper[i].options()));
    return out;
  }

  template <bool Cuda>
  static BackwardResult backward_kernel(const OptionalTensors& grad_updates,
                                        const OptionalTensors& grad_states, at::TensorList grads,
                                        at::TensorList states, at::TensorList params,
                                        const at::Tensor& step, at::TensorList hyper,
                                        c10::ArrayRef<double> options,
                                        const c10::List<bool>& mask) {
    BackwardResult out =
        backward_meta(grad_updates, grad_states, grads, states, params, step, hyper, options, mask);
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    std::optional<at::Device> device;
    if constexpr (Cuda) {
      const std::string op = std::string(Rule::name) + "_backward";
      device = A::check_cuda(op.c_str(), grads, step, hyper, params);
    }
    const size_t n = grads.size();
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    const TensorVector gu = contiguous(grad_updates), gs = contiguous(grad_states);
    const BackwardLists args{
        gu, A::split(gs, n), {g, A::split(st, n), p}, {grad_g, A::split(grad_s, n), grad_p}};
    if constexpr (Cuda) {
      backward_cuda(args, *device, step, hyper, options, mask, grad_h);
    } else {
      backward_cpu(args, step, hyper, options, params, mask, grad_h);
    }
    return out;
  }

 private:
  // The lists a backward kernel reads and writes.
  struct BackwardLists {
    at::TensorList grad_update;
    std::array<at::TensorList, NS> grad_states;
    Lists in, grads_out;
  };

  // The kernels write the selected hyperparameters' gradients on the device.
  static void backward_cuda(const BackwardLists& args, const at::Device& device,
                            const at::Tensor& step, at::TensorList hyper,
                            c10::ArrayRef<double> options, const c10::List<bool>& mask,
                            TensorVector& grad_h) {
    TensorVector grad_h_device(NH);
    for (size_t i = 0; i < NH; ++i) {
      if (!mask[3 + i]) continue;
      grad_h_device[i] = grad_h[i].device() == device
                             ? grad_h[i]
                             : at::empty({}, grad_h[i].options().device(device));
    }
    cuda::backward<Rule>(args.grad_update, args.grad_states, args.in, args.grads_out, step, hyper,
                         Rule::Options::read(options), grad_h_device);
    for (size_t i = 0; i < NH; ++i) {
      // A hyperparameter on the CPU gets its gradient there (a synchronisation).
      if (mask[3 + i] && !grad_h[i].is_same(grad_h_device[i])) grad_h[i].copy_(grad_h_device[i]);
    }
  }

  // The kernel sums the cotangents of the coefficients the wanted
  // hyperparameters need; they are chained to the hyperparameters here.
  static void backward_cpu(const BackwardLists& args, const at::Tensor& step, at::TensorList hyper,
                           c10::ArrayRef<double> options, at::TensorList params,
                           const c10::List<bool>& mask, TensorVector& grad_h) {
    const typename A::Values s = A::values(step, hyper, options, params);
    std::array<bool, NH> wanted{};
    for (size_t i = 0; i < NH; ++i) wanted[i] = mask[3 + i];
    const bool need_hyper = std::find(wanted.begin(), wanted.end(), true) != wanted.end();
    cpu::CoefGrads<Rule> coef{};
    if (need_hyper) coef.needed = rules::coef_needed<Rule>(wanted, s.hyper, s.step, s.options);
    cpu::kernels<Rule>().backward(args.grad_update, args.grad_states, args.in, args.grads_out,
                                  s.kernel_scalars(), need_hyper ? &coef : nullptr);
    if (need_hyper) {
      const auto h = rules::chain_to_hyper<Rule>(coef.sums, s.hyper, s.step, s.options);
      for (size_t i = 0; i < NH; ++i) {
        if (mask[3 + i]) grad_h[i].fill_(h[i]);
      }
    }
  }
};

}  // namespace unrollopt::fused
