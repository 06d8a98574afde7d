#pragma once
// The three operators of an optimizer rule (rules/rule.h), for any rule:
//
//   unrollopt::NAME(Tensor[] grads, Tensor[] states, Tensor[] params, Tensor step,
//                   Tensor[] hyperparameters, float[] options)
//       -> (Tensor[] updates, Tensor[] states)
//   unrollopt::NAME_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, Tensor step,
//                    Tensor[] hyperparameters, float[] options, bool update_params) -> ()
//   unrollopt::NAME_backward(Tensor?[] grad_updates, Tensor?[] grad_states, Tensor[] grads,
//                    Tensor[] states, Tensor[] params, Tensor step, Tensor[] hyperparameters,
//                    float[] options, bool[] output_mask)
//       -> (Tensor[] grad_grads, Tensor[] grad_states, Tensor[] grad_params,
//           Tensor[] grad_hyperparameters)
//
// `states` holds the rule's state lists one after another (all first states,
// then all second states, ...). NAME is out of place and differentiable (its
// Autograd kernel runs NAME_backward); NAME_ updates in place (with
// update_params, params += update; otherwise grads are overwritten by the
// updates) and is not differentiable. NAME_backward's output_mask selects
// (grads, states, params, each hyperparameter); unselected lists are empty and
// unselected hyperparameter gradients are zeros. Each has CPU, Meta and Autograd
// kernels, and CUDA ones in a CUDA build, registered by UNROLLOPT_REGISTER_RULE
// in a source CMake makes for each rule of rules/all.h; their vmap rules are Python's
// (python/unrollopt/_vmap.py: torch.func is Python's, and the functorch C++
// headers of the torch wheels do not compile outside torch's own build).

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "../cuda/kernels.h"
#include "checks.h"
#include "cpu/kernels.h"
#include "math_ops.h"
#include "rules/rule.h"
#include "torch_compat.h"
#include "unrollopt/ops.h"

namespace unrollopt::fused {

using TensorVector = std::vector<at::Tensor>;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;
using ForwardResult = std::tuple<TensorVector, TensorVector>;
using BackwardResult = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector>;

// Shared, rule-independent pieces (fused_op.cpp).
TensorVector contiguous(at::TensorList list);
TensorVector contiguous(const OptionalTensors& list);
TensorVector empty_like_all(at::TensorList list);
// Writes back into `targets` where the kernel worked on contiguous copies.
void copy_back(at::TensorList targets, at::TensorList worked);
bool any_requires_grad(std::initializer_list<at::TensorList> lists,
                       std::initializer_list<const OptionalTensors*> optional_lists);
// Whether any has a forward-mode tangent (jvp, jacfwd).
bool any_forward_grad(std::initializer_list<at::TensorList> lists,
                      std::initializer_list<const OptionalTensors*> optional_lists);
TensorVector as_vector(const OptionalTensors& list);
// The operators' CUDA entry in a build without CUDA kernels (a CUDA torch and no
// toolkit at build time): an error that says why and what to do, where the
// dispatcher would only say that it has no kernel.
[[noreturn]] void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack* stack);

// An autograd node of these operators: it saves their inputs (the lists and
// sizes to find them again) and recomputes from them.
struct SavedInputs : public torch::autograd::Node {
  std::vector<torch::autograd::SavedVariable> saved;
  size_t n = 0, n_params = 0;
  std::vector<double> options;

  void save(std::initializer_list<at::TensorList> lists) {
    for (at::TensorList list : lists) {
      for (const auto& t : list) saved.emplace_back(t, /*is_output=*/false);
    }
  }
  torch::autograd::variable_list unpack() const {
    torch::autograd::variable_list all;
    all.reserve(saved.size());
    for (const auto& v : saved) all.push_back(v.unpack());
    return all;
  }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& v : saved) v.reset_data();
  }
};

template <class Rule>
struct Op {
  static constexpr size_t NS = Rule::states.size();
  static constexpr size_t NH = Rule::hyperparameters.size();
  static constexpr size_t NC = Rule::num_coef;
  using Lists = unrollopt::Lists<Rule>;
  using Scalars = cpu::Scalars<Rule>;

  static std::string qualified(const char* suffix) {
    return std::string("unrollopt::") + Rule::name + suffix;
  }

  // The rule's state lists within `states`; all empty if `states` is.
  static std::array<at::TensorList, NS> split(at::TensorList states, size_t n) {
    std::array<at::TensorList, NS> out{};
    if (!states.empty()) {
      for (size_t k = 0; k < NS; ++k) out[k] = states.slice(k * n, n);
    }
    return out;
  }

  static void check(const char* op, at::TensorList grads, at::TensorList states,
                    at::TensorList params, const at::Tensor& step, at::TensorList hyper) {
    TORCH_CHECK_VALUE(states.size() == NS * grads.size(), "unrollopt.", op, ": states has ",
                      states.size(), " tensors; expected ", NS, " per grad (",
                      c10::Join(", ", Rule::states), ")");
    const auto lists = split(states, grads.size());
    std::array<NamedTensorList, NS> named;
    for (size_t k = 0; k < NS; ++k) named[k] = {Rule::states[k], lists[k]};
    check_parameter_lists(op, grads, named, params);
    check_hyperparameter(op, "step", step);
    check_step(op, step);
    TORCH_CHECK_VALUE(hyper.size() == NH, "unrollopt.", op, ": expected ", NH, " hyperparameters (",
                      c10::Join(", ", Rule::hyperparameters), "), got ", hyper.size());
    for (size_t i = 0; i < NH; ++i) check_hyperparameter(op, Rule::hyperparameters[i], hyper[i]);
  }

  // A weight decay needs params. Checked where the value is on the CPU: reading
  // it from a GPU would synchronise.
  static void check_decay_params(at::TensorList hyper, at::TensorList params) {
    for (size_t i = 0; i < NH && params.empty(); ++i) {
      TORCH_CHECK_VALUE(std::string_view(Rule::hyperparameters[i]) != "weight_decay" ||
                            !hyper[i].is_cpu() || hyper[i].item<double>() == 0,
                        "unrollopt.", Rule::name, ": weight_decay is not 0, so params are needed");
    }
  }

  // The hyperparameters' values (CPU kernels only).
  struct Values {
    std::array<double, NH> hyper;
    double step;
    typename Rule::Options options;
    Scalars kernel_scalars() const { return {Rule::template coef<double>(hyper, step, options)}; }
  };
  static Values values(const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options,
                       at::TensorList params) {
    check_decay_params(hyper, params);
    Values v{{}, step.item<double>(), Rule::Options::read(options)};
    for (size_t i = 0; i < NH; ++i) v.hyper[i] = hyper[i].item<double>();
    return v;
  }

  // The CUDA kernels leave the step and the hyperparameters where they are: on
  // the GPU (read there) or on the CPU (read here, without a synchronisation).
  static at::Device check_cuda(const char* op, at::TensorList grads, const at::Tensor& step,
                               at::TensorList hyper, at::TensorList params) {
    check_decay_params(hyper, params);
    std::optional<at::Device> device;
    if (!grads.empty()) {
      TORCH_CHECK_VALUE(grads[0].is_cuda(), "unrollopt.", op,
                        ": the step or a hyperparameter is on a CUDA device but grads are on ",
                        grads[0].device());
      device = grads[0].device();
    }
    for (const at::Tensor* t : scalar_inputs(step, hyper)) {
      if (t->is_cpu()) continue;
      if (!device) device = t->device();
      TORCH_CHECK_VALUE(t->device() == *device, "unrollopt.", op,
                        ": the step and the hyperparameters must be on the CPU or on ", *device,
                        " (the grads' device), but one is on ", t->device());
    }
    TORCH_CHECK(device.has_value(), "unrollopt.", op, ": no tensor on a CUDA device");
    return *device;
  }
  static std::array<const at::Tensor*, 1 + NH> scalar_inputs(const at::Tensor& step,
                                                             at::TensorList hyper) {
    std::array<const at::Tensor*, 1 + NH> out{&step};
    for (size_t i = 0; i < NH; ++i) out[1 + i] = &hyper[i];
    return out;
  }

  // --- NAME --------------------------------------------------------------------

  static ForwardResult forward_meta(at::TensorList grads, at::TensorList states,
                                    at::TensorList params, const at::Tensor& step,
                                    at::TensorList hyper, c10::ArrayRef<double> options) {
    check(Rule::name, grads, states, params, step, hyper);
    Rule::Options::read(options);
    return {empty_like_all(grads), empty_like_all(states)};
  }

  template <bool Cuda>
  static ForwardResult forward_kernel(at::TensorList grads, at::TensorList states,
                                      at::TensorList params, const at::Tensor& step,
                                      at::TensorList hyper, c10::ArrayRef<double> options) {
    check(Rule::name, grads, states, params, step, hyper);
    if constexpr (Cuda) check_cuda(Rule::name, grads, step, hyper, params);
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    TensorVector update = empty_like_all(g), new_states = empty_like_all(st);
    const Lists in{g, split(st, g.size()), p};
    if constexpr (Cuda) {
      cuda::forward<Rule>(in, update, split(new_states, g.size()), /*add_to_param=*/false, step,
                          hyper, Rule::Options::read(options));
    } else {
      cpu::kernels<Rule>().forward(in, update, split(new_states, g.size()),
                                   /*add_to_param=*/false,
                                   values(step, hyper, options, params).kernel_scalars());
    }
    return {std::move(update), std::move(new_states)};
  }

  // --- NAME_ -------------------------------------------------------------------

  static void check_inplace(at::TensorList params, at::TensorList grads, at::TensorList states,
                            const at::Tensor& step, at::TensorList hyper,
                            c10::ArrayRef<double> options, bool update_params) {
    const std::string op = std::string(Rule::name) + "_";
    check(op.c_str(), grads, states, params, step, hyper);
    Rule::Options::read(options);
    TORCH_CHECK_VALUE(!update_params || !params.empty(), "unrollopt.", op,
                      ": update_params=True needs params (got an empty list)");
    check_writable(op.c_str(), update_params ? "params" : "grads", update_params ? params : grads);
    check_writable(op.c_str(), "states", states);
    const auto lists = split(states, grads.size());
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
    if constexpr (Cuda) check_cuda(Rule::name, grads, step, hyper, params);
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    const TensorVector& first_out = update_params ? p : g;
    const Lists in{g, split(st, g.size()), p};
    if constexpr (Cuda) {
      cuda::forward<Rule>(in, first_out, split(st, g.size()), update_params, step, hyper,
                          Rule::Options::read(options));
    } else {
      cpu::kernels<Rule>().forward(in, first_out, split(st, g.size()), update_params,
                                   values(step, hyper, options, params).kernel_scalars());
    }
    copy_back(update_params ? params : grads, first_out);
    copy_back(states, st);
  }

  // --- NAME_backward -------------------------------------------------------------

  static void check_cotangents(const char* name, const OptionalTensors& list, at::TensorList like) {
    const std::string op = std::string(Rule::name) + "_backward";
    TORCH_CHECK_VALUE(list.size() == like.size(), "unrollopt.", op, ": ", name, " has ",
                      list.size(), " entries; expected ", like.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const std::optional<at::Tensor> t = list[i];
      if (t.has_value() && t->defined()) check_like(op.c_str(), name, i, *t, like[i]);
    }
  }

  // Checks the inputs and allocates the outputs; the kernels start here too.
  static BackwardResult backward_meta(const OptionalTensors& grad_updates,
                                      const OptionalTensors& grad_states, at::TensorList grads,
                                      at::TensorList states, at::TensorList params,
                                      const at::Tensor& step, at::TensorList hyper,
                                      c10::ArrayRef<double> options, const c10::List<bool>& mask) {
    const std::string op = std::string(Rule::name) + "_backward";
    check(op.c_str(), grads, states, params, step, hyper);
    Rule::Options::read(options);
    check_cotangents("grad_updates", grad_updates, grads);
    check_cotangents("grad_states", grad_states, states);
    TORCH_CHECK_VALUE(mask.size() == 3 + NH, "unrollopt.", op, ": output_mask must hold ", 3 + NH,
                      " values (grads, states, params, ", c10::Join(", ", Rule::hyperparameters),
                      ")");
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
      device = check_cuda(op.c_str(), grads, step, hyper, params);
    }
    const size_t n = grads.size();
    const TensorVector g = contiguous(grads), st = contiguous(states), p = contiguous(params);
    const TensorVector gu = contiguous(grad_updates), gs = contiguous(grad_states);
    const Lists in{g, split(st, n), p}, grads_out{grad_g, split(grad_s, n), grad_p};
    if constexpr (Cuda) {
      // The kernels write the selected hyperparameters' gradients on the device.
      TensorVector grad_h_device(NH);
      for (size_t i = 0; i < NH; ++i) {
        if (!mask[3 + i]) continue;
        grad_h_device[i] = grad_h[i].device() == *device
                               ? grad_h[i]
                               : at::empty({}, grad_h[i].options().device(*device));
      }
      cuda::backward<Rule>(gu, split(gs, n), in, grads_out, step, hyper,
                           Rule::Options::read(options), grad_h_device);
      for (size_t i = 0; i < NH; ++i) {
        // A hyperparameter on the CPU gets its gradient there (a synchronisation).
        if (mask[3 + i] && !grad_h[i].is_same(grad_h_device[i])) grad_h[i].copy_(grad_h_device[i]);
      }
    } else {
      const Values s = values(step, hyper, options, params);
      std::array<bool, NH> wanted{};
      for (size_t i = 0; i < NH; ++i) wanted[i] = mask[3 + i];
      const bool need_hyper = std::find(wanted.begin(), wanted.end(), true) != wanted.end();
      cpu::CoefGrads<Rule> coef{};
      if (need_hyper) coef.needed = rules::coef_needed<Rule>(wanted, s.hyper, s.step, s.options);
      cpu::kernels<Rule>().backward(gu, split(gs, n), in, grads_out, s.kernel_scalars(),
                                    need_hyper ? &coef : nullptr);
      if (need_hyper) {
        const auto h = rules::chain_to_hyper<Rule>(coef.sums, s.hyper, s.step, s.options);
        for (size_t i = 0; i < NH; ++i) {
          if (mask[3 + i]) grad_h[i].fill_(h[i]);
        }
      }
    }
    return out;
  }

  // The vector-Jacobian product in differentiable tensor ops (the rule's own vjp,
  // coefficients in float64; half and bfloat16 computed in float32, as in the
  // fused kernel), for when the backward must itself be differentiated.
  static BackwardResult backward_composite(const OptionalTensors& grad_updates,
                                           const OptionalTensors& grad_states, at::TensorList grads,
                                           at::TensorList states, at::TensorList params,
                                           const at::Tensor& step, at::TensorList hyper,
                                           c10::ArrayRef<double> options,
                                           const c10::List<bool>& mask) {
    const size_t n = grads.size();
    // The coefficients and their derivatives with respect to the
    // hyperparameters, as differentiable tensors (forward mode, no autograd call).
    using DT = math::Dual<at::Tensor, NH>;
    std::array<DT, NH> h;
    for (size_t i = 0; i < NH; ++i) h[i] = DT::variable(hyper[i].to(at::kDouble), i);
    const auto dual_coef =
        Rule::template coef<DT>(h, DT(step.to(at::kDouble), {}), Rule::Options::read(options));
    std::array<at::Tensor, NC> coef;
    // Only the cotangents of coefficients that depend on a wanted hyperparameter
    // are summed (an undefined derivative is 0).
    std::array<bool, NC> needed{};
    for (size_t j = 0; j < NC; ++j) {
      coef[j] = dual_coef[j].value;
      for (size_t i = 0; i < NH; ++i) {
        needed[j] = needed[j] || (mask[3 + i] && dual_coef[j].grad[i].defined());
      }
    }
    const auto st = split(states, n);
    const TensorVector gu = as_vector(grad_updates), gs = as_vector(grad_states);
    BackwardResult out;
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    std::array<TensorVector, NS> grad_s_lists;
    std::array<at::Tensor, NC> coef_sums;
    for (size_t i = 0; i < n; ++i) {
      const at::ScalarType dtype = grads[i].scalar_type();
      const at::ScalarType compute =
          (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
      const auto up = [&](const at::Tensor& t) {
        return t.defined() ? t.to(compute) : at::zeros_like(grads[i], compute);
      };
      std::array<at::Tensor, NS> g_state, state;
      for (size_t k = 0; k < NS; ++k) {
        g_state[k] = up(gs[k * n + i]);
        state[k] = up(st[k][i]);
      }
      const auto r = Rule::vjp(up(gu[i]), g_state, up(grads[i]), state,
                               params.empty() ? up(at::Tensor()) : up(params[i]), coef);
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
    // Chain the coefficients' cotangents to the hyperparameters.
    for (size_t i = 0; i < NH; ++i) {
      at::Tensor total;
      for (size_t j = 0; j < NC && mask[3 + i]; ++j) {
        if (!coef_sums[j].defined() || !dual_coef[j].grad[i].defined()) continue;
        const at::Tensor term = coef_sums[j] * dual_coef[j].grad[i];
        total = total.defined() ? total + term : term;
      }
      grad_h.push_back(total.defined() ? total.to(hyper[i].scalar_type())
                                       : at::zeros({}, hyper[i].options()));
    }
    return out;
  }

  // The backward of NAME_backward, for second order: the vector-Jacobian
  // product of backward_composite, recomputed from the saved inputs only when
  // the backward is itself differentiated. (Under torch.func's grad every
  // backward runs with create_graph=True for the transforms outside it, which
  // mostly never differentiate it: the fused backward runs, and this waits.)
  struct DoubleBackward : public SavedInputs {
    // Saved: grad_updates, grad_states, grads, states, params, step, hyperparameters.
    c10::List<bool> mask;

    std::string name() const override { return qualified("_backwardBackward"); }

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grad_out) override {
      const bool create_graph = at::GradMode::is_enabled();
      // Differentiated through fresh aliases of the saved inputs, not the inputs:
      // one input may be computed from another (the gradient from the
      // parameters), and a VJP with respect to the inputs themselves would take
      // the total derivative along that path (the engine differentiates it
      // separately) through graph the outer backward may already have freed.
      torch::autograd::variable_list all = unpack();
      {
        at::AutoGradMode enable(true);
        for (auto& t : all) {
          if (t.defined()) t = t.view_as(t);
        }
      }
      const at::TensorList in(all);
      const auto optional = [](at::TensorList list) {
        OptionalTensors out;
        for (const auto& t : list)
          out.push_back(t.defined() ? std::optional<at::Tensor>(t) : std::nullopt);
        return out;
      };
      // Where each input list starts in `saved`.
      const size_t grad_states0 = n, grads0 = (1 + NS) * n, states0 = grads0 + n,
                   params0 = states0 + NS * n, step = params0 + n_params;
      BackwardResult r;
      {
        at::AutoGradMode enable(true);
        r = backward_composite(optional(in.slice(0, n)), optional(in.slice(grad_states0, NS * n)),
                               in.slice(grads0, n), in.slice(states0, NS * n),
                               in.slice(params0, n_params), in[step], in.slice(step + 1, NH),
                               options, mask);
      }
      torch::autograd::variable_list outputs, cotangents, inputs;
      std::vector<size_t> wanted;
      size_t k = 0;
      for (const TensorVector* list :
           {&std::get<0>(r), &std::get<1>(r), &std::get<2>(r), &std::get<3>(r)}) {
        for (const auto& t : *list) {
          if (grad_out[k].defined() && t.requires_grad()) {
            outputs.push_back(t);
            cotangents.push_back(grad_out[k]);
          }
          ++k;
        }
      }
      for (size_t i = 0; i < all.size(); ++i) {
        if (task_should_compute_output(i) && all[i].defined() && all[i].requires_grad()) {
          wanted.push_back(i);
          inputs.push_back(all[i]);
        }
      }
      torch::autograd::variable_list result(all.size());
      if (outputs.empty() || inputs.empty()) return result;
      const auto grads =
          torch::autograd::grad(outputs, inputs, cotangents, /*retain_graph=*/create_graph,
                                create_graph, /*allow_unused=*/true);
      for (size_t j = 0; j < wanted.size(); ++j) result[wanted[j]] = grads[j];
      return result;
    }
  };

  static BackwardResult backward_autograd(const OptionalTensors& grad_updates,
                                          const OptionalTensors& grad_states, at::TensorList grads,
                                          at::TensorList states, at::TensorList params,
                                          const at::Tensor& step, at::TensorList hyper,
                                          c10::ArrayRef<double> options,
                                          const c10::List<bool>& mask) {
    if (any_forward_grad({grads, states, params, hyper}, {&grad_updates, &grad_states})) {
      return backward_composite(grad_updates, grad_states, grads, states, params, step, hyper,
                                options, mask);
    }
    BackwardResult out = [&] {
      at::AutoDispatchBelowADInplaceOrView guard;
      return backward_handle().call(grad_updates, grad_states, grads, states, params, step, hyper,
                                    options, mask);
    }();
    if (!at::GradMode::is_enabled() ||
        !any_requires_grad({grads, states, params, hyper}, {&grad_updates, &grad_states})) {
      return out;
    }
    const TensorVector gu = as_vector(grad_updates), gs = as_vector(grad_states);
    auto node = torch_compat::make_node<DoubleBackward>();
    node->save({gu, gs, grads, states, params, at::TensorList(step), hyper});
    node->set_next_edges(
        torch::autograd::collect_next_edges(gu, gs, grads, states, params, step, hyper));
    node->n = grads.size();
    node->n_params = params.size();
    node->options = options.vec();
    node->mask = mask.copy();
    auto& [grad_g, grad_s, grad_p, grad_h] = out;
    for (TensorVector* list : {&grad_g, &grad_s, &grad_p, &grad_h})
      torch::autograd::set_history(*list, node);
    return out;
  }

  // --- autograd of NAME ---------------------------------------------------------
  //
  // A plain autograd node, set on the outputs as aten's generated kernels do
  // (not a torch::autograd::Function, which torch.func refuses): the fused
  // kernel runs under grad, vjp, jacrev and vmap(grad(...)). Forward mode
  // (jvp, jacfwd, hessian) runs the rule's math in tensor ops instead.

  struct Backward : public SavedInputs {
    // Saved: grads, states, params, step, hyperparameters. The backward
    // recomputes the step from them: it keeps nothing the forward did not
    // already hold.
    std::string name() const override { return qualified("Backward"); }

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grad_out) override {
      const torch::autograd::variable_list all = unpack();
      const at::TensorList in(all);
      const size_t h = (1 + NS) * n + n_params;  // index of step; hyperparameters follow
      const auto needs = [&](size_t begin, size_t len) {
        for (size_t i = begin; i < begin + len; ++i) {
          if (task_should_compute_output(i)) return true;
        }
        return false;
      };
      c10::List<bool> mask{needs(0, n), needs(n, NS * n), needs((1 + NS) * n, n_params)};
      for (size_t i = 0; i < NH; ++i) mask.push_back(needs(h + 1 + i, 1));
      OptionalTensors grad_updates, grad_states;
      for (size_t i = 0; i < n; ++i) grad_updates.push_back(grad_out[i]);
      for (size_t i = n; i < (1 + NS) * n; ++i) grad_states.push_back(grad_out[i]);
      auto [grad_g, grad_s, grad_p, grad_h] = backward_handle().call(
          grad_updates, grad_states, in.slice(0, n), in.slice(n, NS * n),
          in.slice((1 + NS) * n, n_params), in[h], in.slice(h + 1, NH), options, mask);
      torch::autograd::variable_list result;
      result.reserve(all.size());
      const auto emit = [&](const TensorVector& list, size_t len) {
        for (size_t i = 0; i < len; ++i) result.push_back(list.empty() ? at::Tensor() : list[i]);
      };
      emit(grad_g, n);
      emit(grad_s, NS * n);
      emit(grad_p, n_params);
      result.emplace_back();  // step
      for (size_t i = 0; i < NH; ++i) result.push_back(mask[3 + i] ? grad_h[i] : at::Tensor());
      return result;
    }
  };

  static ForwardResult forward_autograd(at::TensorList grads, at::TensorList states,
                                        at::TensorList params, const at::Tensor& step,
                                        at::TensorList hyper, c10::ArrayRef<double> options) {
    if (any_forward_grad({grads, states, params, hyper}, {})) {
      return forward_composite(grads, states, params, step, hyper, options);
    }
    auto out = [&] {
      at::AutoDispatchBelowADInplaceOrView guard;
      return forward_handle().call(grads, states, params, step, hyper, options);
    }();
    if (!at::GradMode::is_enabled() || !any_requires_grad({grads, states, params, hyper}, {})) {
      return out;
    }
    auto node = torch_compat::make_node<Backward>();
    node->set_next_edges(torch::autograd::collect_next_edges(grads, states, params, step, hyper));
    node->save({grads, states, params, at::TensorList(step), hyper});
    node->n = grads.size();
    node->n_params = params.size();
    node->options = options.vec();
    auto& [update, new_states] = out;
    torch::autograd::set_history(update, node);
    torch::autograd::set_history(new_states, node);
    return out;
  }

  // NAME in differentiable tensor ops (the rule's own forward, coefficients in
  // float64 from the hyperparameters; half and bfloat16 computed in float32, as
  // in the fused kernel): its derivatives in both modes come from aten.
  static ForwardResult forward_composite(at::TensorList grads, at::TensorList states,
                                         at::TensorList params, const at::Tensor& step,
                                         at::TensorList hyper, c10::ArrayRef<double> options) {
    check(Rule::name, grads, states, params, step, hyper);
    check_decay_params(hyper, params);
    std::array<at::Tensor, NH> h;
    for (size_t i = 0; i < NH; ++i) h[i] = hyper[i].to(at::kDouble);
    const auto coef =
        Rule::template coef<at::Tensor>(h, step.to(at::kDouble), Rule::Options::read(options));
    const size_t n = grads.size();
    const auto st = split(states, n);
    ForwardResult out;
    auto& [update, new_states] = out;
    std::array<TensorVector, NS> state_lists;
    for (size_t i = 0; i < n; ++i) {
      const at::ScalarType dtype = grads[i].scalar_type();
      const at::ScalarType compute =
          (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
      std::array<at::Tensor, NS> state;
      for (size_t k = 0; k < NS; ++k) state[k] = st[k][i].to(compute);
      const at::Tensor p =
          params.empty() ? at::zeros_like(grads[i], compute) : params[i].to(compute);
      const auto r = Rule::forward(grads[i].to(compute), state, p, coef);
      update.push_back(r[0].to(dtype));
      for (size_t k = 0; k < NS; ++k) state_lists[k].push_back(r[1 + k].to(dtype));
    }
    for (const auto& list : state_lists)
      new_states.insert(new_states.end(), list.begin(), list.end());
    return out;
  }

  static void inplace_autograd(at::TensorList params, at::TensorList grads, at::TensorList states,
                               const at::Tensor& step, at::TensorList hyper,
                               c10::ArrayRef<double> options, bool update_params) {
    // Refused where autograd would need what the step overwrites or reads: grads,
    // states or hyperparameters that require grad, params that it writes or that
    // are results of a differentiable step. Leaf params only read (a weight decay
    // in a plain training step, nn.Parameters under grad mode) are fine.
    const auto non_leaf = [](at::TensorList list) {
      return std::any_of(list.begin(), list.end(),
                         [](const at::Tensor& t) { return t.requires_grad() && !t.is_leaf(); });
    };
    TORCH_CHECK(!at::GradMode::is_enabled() ||
                    !(any_requires_grad({grads, states, hyper}, {}) ||
                      (update_params ? any_requires_grad({params}, {}) : non_leaf(params))),
                "unrollopt.", Rule::name,
                "_ updates tensors in place and is not differentiable, but an input requires "
                "grad. For a differentiable step use the out-of-place unrollopt.",
                Rule::name,
                " (update(..., inplace=False)); for a plain optimizer step run "
                "under torch.no_grad().");
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      inplace_handle().call(params, grads, states, step, hyper, options, update_params);
    }
    for (at::TensorList list : {update_params ? params : grads, states}) {
      for (const auto& t : list) torch::autograd::impl::bump_version(t);
    }
  }

  // --- dispatcher handles and registration ------------------------------------

  static const auto& forward_handle() {
    static const auto handle = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow(qualified("").c_str(), "")
                                   .template typed<decltype(forward_kernel<false>)>();
    return handle;
  }
  static const auto& inplace_handle() {
    static const auto handle = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow(qualified("_").c_str(), "")
                                   .template typed<decltype(inplace_kernel<false>)>();
    return handle;
  }
  static const auto& backward_handle() {
    static const auto handle = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow(qualified("_backward").c_str(), "")
                                   .template typed<decltype(backward_kernel<false>)>();
    return handle;
  }

  static void define(torch::Library& m) {
    ops::describe_operator(Rule::name,
                           {{Rule::states.begin(), Rule::states.end()},
                            {Rule::hyperparameters.begin(), Rule::hyperparameters.end()},
                            {Rule::Options::names.begin(), Rule::Options::names.end()}});
    const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
    const std::string name = Rule::name;
    const std::string schemas[] = {
        name +
            "(Tensor[] grads, Tensor[] states, Tensor[] params, Tensor step, "
            "Tensor[] hyperparameters, float[] options) -> (Tensor[], Tensor[])",
        name +
            "_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] states, Tensor step, "
            "Tensor[] hyperparameters, float[] options, bool update_params) -> ()",
        name +
            "_backward(Tensor?[] grad_updates, Tensor?[] grad_states, Tensor[] grads, "
            "Tensor[] states, Tensor[] params, Tensor step, Tensor[] hyperparameters, "
            "float[] options, bool[] output_mask) -> (Tensor[], Tensor[], Tensor[], Tensor[])"};
    for (const auto& schema : schemas) m.def(schema.c_str(), tags);
  }
  template <bool Cuda>
  static void impl_device(torch::Library& m) {
    const std::string name = Rule::name;
    m.impl(name.c_str(), TORCH_FN(forward_kernel<Cuda>));
    m.impl((name + "_").c_str(), TORCH_FN(inplace_kernel<Cuda>));
    m.impl((name + "_backward").c_str(), TORCH_FN(backward_kernel<Cuda>));
  }
  static void impl_meta(torch::Library& m) {
    const std::string name = Rule::name;
    m.impl(name.c_str(), TORCH_FN(forward_meta));
    m.impl((name + "_").c_str(), TORCH_FN(inplace_meta));
    m.impl((name + "_backward").c_str(), TORCH_FN(backward_meta));
  }
  static void impl_no_cuda(torch::Library& m) {
    const std::string name = Rule::name;
    for (const std::string& op : {name, name + "_", name + "_backward"})
      m.impl(op.c_str(), torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernels>());
  }
  static void impl_autograd(torch::Library& m) {
    const std::string name = Rule::name;
    m.impl(name.c_str(), TORCH_FN(forward_autograd));
    m.impl((name + "_").c_str(), TORCH_FN(inplace_autograd));
    m.impl((name + "_backward").c_str(), TORCH_FN(backward_autograd));
  }
};

}  // namespace unrollopt::fused

// Registers the operators of a rule; used once, in the rule's source file.
#define UNROLLOPT_REGISTER_RULE(Rule)                                                          \
  TORCH_LIBRARY_FRAGMENT(unrollopt, m) { unrollopt::fused::Op<Rule>::define(m); }              \
  TORCH_LIBRARY_IMPL(unrollopt, CPU, m) { unrollopt::fused::Op<Rule>::impl_device<false>(m); } \
  TORCH_LIBRARY_IMPL(unrollopt, Meta, m) { unrollopt::fused::Op<Rule>::impl_meta(m); }         \
  TORCH_LIBRARY_IMPL(unrollopt, Autograd, m) { unrollopt::fused::Op<Rule>::impl_autograd(m); } \
  UNROLLOPT_REGISTER_CUDA(Rule)

#ifdef UNROLLOPT_WITH_CUDA
#define UNROLLOPT_REGISTER_CUDA(Rule) \
  TORCH_LIBRARY_IMPL(unrollopt, CUDA, m) { unrollopt::fused::Op<Rule>::impl_device<true>(m); }
#else
#define UNROLLOPT_REGISTER_CUDA(Rule) \
  TORCH_LIBRARY_IMPL(unrollopt, CUDA, m) { unrollopt::fused::Op<Rule>::impl_no_cuda(m); }
#endif
