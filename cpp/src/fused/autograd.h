#pragma once
// The Autograd kernels of a rule's operators. NAME records a plain autograd
// node on its outputs, as aten's generated kernels do (not a
// torch::autograd::Function, which torch.func refuses), so that the fused
// kernels run under grad, vjp, jacrev and vmap(grad(...)); its node runs
// NAME_backward. NAME_backward records a node that differentiates the
// composite backward (composite.h), for second order. Forward mode (jvp,
// jacfwd, hessian) runs the composite step instead. NAME_ is not
// differentiable and refuses inputs that autograd would need.

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "../torch_compat.h"
#include "arguments.h"
#include "composite.h"
#include "kernels.h"
#include "unrollopt/ops.h"

namespace unrollopt::fused {

bool any_requires_grad(std::initializer_list<at::TensorList> lists);

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
struct Autograd {
  using A = Arguments<Rule>;
  using K = Kernels<Rule>;
  static constexpr size_t NS = A::NS;
  static constexpr size_t NH = A::NH;

  // --- NAME ---------------------------------------------------------------------

  static constexpr Counts counts = A::counts;

  static const c10::OperatorHandle& backward_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(A::qualified("_backward").c_str(), "");
    return op;
  }

  // Sets the history of the operator's outputs on top of the stack (lists of
  // tensors or tensors) to `node`, in order.
  // (A shared_ptr or, in newer torch, an intrusive_ptr: torch_compat.h.)
  template <class NodePointer>
  static void set_history(const torch::jit::Stack& stack, size_t outputs, const NodePointer& node) {
    for (const c10::IValue& out : torch::jit::last(stack, outputs)) {
      if (out.isTensor()) {
        torch::autograd::set_history(out.toTensor(), node);
      } else {
        for (const at::Tensor& t : out.toTensorList()) torch::autograd::set_history(t, node);
      }
    }
  }

  // The Autograd kernels are boxed: below Autograd they redispatch the stack
  // they were given.
  static bool requires_grad(const at::Tensor& t) { return t.requires_grad(); }
  static bool forward_grad(const at::Tensor& t) { return t._fw_grad(/*level=*/0).defined(); }
  // Whether to record a node: read from the stack without copying the lists
  // first (the backward's own call, from its node, records none).
  static bool records(const c10::OperatorHandle& op, const torch::jit::Stack& stack) {
    return at::GradMode::is_enabled() && any_argument(op, stack, &requires_grad);
  }

  static void forward(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                      torch::jit::Stack* stack) {
    if (any_argument(op, *stack, &forward_grad)) {  // forward mode: the composite step
      const auto [grads, states, params, step, hyper, options] = read_forward(op, *stack, counts);
      drop_arguments(op, *stack);
      push_forward(*stack, Composite<Rule>::forward(grads, states, params, step, hyper, options),
                   NS);
      return;
    }
    if (!records(op, *stack)) return redispatch_below_autograd(op, keys, stack);
    const auto [grads, states, params, step, hyper, options] = read_forward(op, *stack, counts);
    redispatch_below_autograd(op, keys, stack);
    auto node = torch_compat::make_node<Backward>();
    node->set_next_edges(torch::autograd::collect_next_edges(grads, states, params, step, hyper));
    node->save({grads, states, params, at::TensorList(step), hyper});
    node->n = grads.size();
    node->n_params = params.size();
    node->options = options;
    set_history(*stack, 1 + NS, node);  // updates, then each state list
  }

  // The node of NAME. Saved: grads, states, params, step, hyperparameters. The
  // backward recomputes the step from them: it keeps nothing the forward did
  // not already hold.
  struct Backward : public SavedInputs {
    std::string name() const override { return A::qualified("Backward"); }

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grad_out) override {
      const torch::autograd::variable_list all = unpack();
      const at::TensorList in(all);
      const size_t h = (1 + NS) * n + n_params;  // index of step; hyperparameters follow
      const c10::List<bool> mask = output_mask(h);
      OptionalTensors grad_updates, grad_states;
      for (size_t i = 0; i < n; ++i) grad_updates.push_back(grad_out[i]);
      for (size_t i = n; i < (1 + NS) * n; ++i) grad_states.push_back(grad_out[i]);
      auto [grad_g, grad_s, grad_p, grad_h] =
          call_backward(backward_op(), ops::describe(Rule::name), grad_updates, grad_states,
                        in.slice(0, n), in.slice(n, NS * n), in.slice((1 + NS) * n, n_params),
                        in[h], in.slice(h + 1, NH), options, mask);
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

   private:
    // NAME_backward's output_mask: what the engine wants of (grads, states,
    // params, each hyperparameter), given the index of the saved step.
    c10::List<bool> output_mask(size_t step_index) {
      const auto needs = [&](size_t begin, size_t len) {
        for (size_t i = begin; i < begin + len; ++i) {
          if (task_should_compute_output(i)) return true;
        }
        return false;
      };
      c10::List<bool> mask{needs(0, n), needs(n, NS * n), needs((1 + NS) * n, n_params)};
      for (size_t i = 0; i < NH; ++i) mask.push_back(needs(step_index + 1 + i, 1));
      return mask;
    }
  };

  // --- NAME_backward ------------------------------------------------------------

  static void backward(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                       torch::jit::Stack* stack) {
    const bool forward_mode = any_argument(op, *stack, &forward_grad);
    if (!forward_mode && !records(op, *stack)) return redispatch_below_autograd(op, keys, stack);
    const BackwardArguments a = read_backward(op, *stack, counts);
    const auto& [grads, states, params, step, hyper, options] =
        static_cast<const StepArguments&>(a);
    if (forward_mode) {
      drop_arguments(op, *stack);
      push_backward(*stack,
                    Composite<Rule>::backward(a.grad_updates, a.grad_states, grads, states, params,
                                              step, hyper, options, a.mask),
                    NS, a.wanted);
      return;
    }
    redispatch_below_autograd(op, keys, stack);
    const TensorVector gu = as_vector(a.grad_updates), gs = as_vector(a.grad_states);
    auto node = torch_compat::make_node<DoubleBackward>();
    node->save({gu, gs, grads, states, params, at::TensorList(step), hyper});
    node->set_next_edges(
        torch::autograd::collect_next_edges(gu, gs, grads, states, params, step, hyper));
    node->n = grads.size();
    node->n_params = params.size();
    node->options = options;
    node->mask = a.mask.copy();
    node->wanted = a.wanted;
    set_history(*stack, 2 + NS + NH, node);
  }

  // The node of NAME_backward, for second order: the vector-Jacobian product of
  // the composite backward, recomputed from the saved inputs only when the
  // backward is itself differentiated. (Under torch.func's grad every backward
  // runs with create_graph=True for the transforms outside it, which mostly
  // never differentiate it: the fused backward runs, and this waits.)
  struct DoubleBackward : public SavedInputs {
    // Saved: grad_updates, grad_states, grads, states, params, step, hyperparameters.
    c10::List<bool> mask;      // the kernels' (grads, states, params, each hyperparameter)
    std::vector<bool> wanted;  // the operator's: one per output (each state list)

    std::string name() const override { return A::qualified("_backwardBackward"); }

    torch::autograd::variable_list apply(torch::autograd::variable_list&& grad_out) override {
      const bool create_graph = at::GradMode::is_enabled();
      const torch::autograd::variable_list all = fresh_aliases(unpack());
      const BackwardResult r = composite_backward(all);
      torch::autograd::variable_list outputs, cotangents, inputs;
      // The node's outputs, in order: the lists the operator returned (an
      // unselected state list is empty), then the hyperparameters' gradients.
      const auto& [grad_g, grad_s, grad_p, grad_h] = r;
      std::vector<at::TensorList> lists{grad_g};
      for (size_t k = 0; k < NS; ++k) {
        if (wanted[1 + k]) lists.push_back(at::TensorList(grad_s).slice(k * n, n));
      }
      lists.push_back(grad_p);
      lists.push_back(grad_h);
      size_t k = 0;
      for (at::TensorList list : lists) {
        for (const auto& t : list) {
          if (grad_out[k].defined() && t.requires_grad()) {
            outputs.push_back(t);
            cotangents.push_back(grad_out[k]);
          }
          ++k;
        }
      }
      std::vector<size_t> wanted;
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

   private:
    // Differentiated through fresh aliases of the saved inputs, not the inputs:
    // one input may be computed from another (the gradient from the
    // parameters), and a VJP with respect to the inputs themselves would take
    // the total derivative along that path (the engine differentiates it
    // separately) through graph the outer backward may already have freed.
    static torch::autograd::variable_list fresh_aliases(torch::autograd::variable_list all) {
      at::AutoGradMode enable(true);
      for (auto& t : all) {
        if (t.defined()) t = t.view_as(t);
      }
      return all;
    }

    // The composite backward of the saved inputs, recording a graph.
    BackwardResult composite_backward(at::TensorList in) const {
      const auto optional = [](at::TensorList list) {
        OptionalTensors out;
        for (const auto& t : list)
          out.push_back(t.defined() ? std::optional<at::Tensor>(t) : std::nullopt);
        return out;
      };
      // Where each input list starts in `saved`.
      const size_t grad_states0 = n, grads0 = (1 + NS) * n, states0 = grads0 + n,
                   params0 = states0 + NS * n, step = params0 + n_params;
      at::AutoGradMode enable(true);
      return Composite<Rule>::backward(
          optional(in.slice(0, n)), optional(in.slice(grad_states0, NS * n)), in.slice(grads0, n),
          in.slice(states0, NS * n), in.slice(params0, n_params), in[step], in.slice(step + 1, NH),
          options, mask);
    }
  };

  // --- NAME_ --------------------------------------------------------------------

  static void inplace(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                      torch::jit::Stack* stack) {
    const InplaceArguments a = read_inplace(op, *stack, counts);
    const auto& [grads, states, params, step, hyper, options] =
        static_cast<const StepArguments&>(a);
    // Refused where autograd would need what the step overwrites or reads: grads,
    // states or hyperparameters that require grad, params that it writes or that
    // are results of a differentiable step. Leaf params only read (a weight decay
    // in a plain training step, nn.Parameters under grad mode) are fine.
    const auto non_leaf = [](at::TensorList list) {
      return std::any_of(list.begin(), list.end(),
                         [](const at::Tensor& t) { return t.requires_grad() && !t.is_leaf(); });
    };
    TORCH_CHECK(!at::GradMode::is_enabled() ||
                    !(any_requires_grad({grads, states, hyper}) ||
                      (a.update_params ? any_requires_grad({params}) : non_leaf(params))),
                "unrollopt.", Rule::name,
                "_ updates tensors in place and is not differentiable, but an input requires "
                "grad. For a differentiable step use the out-of-place unrollopt.",
                Rule::name,
                " (update(..., inplace=False)); for a plain optimizer step run "
                "under torch.no_grad().");
    redispatch_below_autograd(op, keys, stack);
    for (at::TensorList list : {a.update_params ? at::TensorList(params) : at::TensorList(grads),
                                at::TensorList(states)}) {
      for (const auto& t : list) torch::autograd::impl::bump_version(t);
    }
  }
};

}  // namespace unrollopt::fused
