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

// The parts, each a struct template over the rule: fused/arguments.h (counts,
// checks, values), fused/kernels.h (CPU, CUDA and Meta kernels),
// fused/composite.h (the step and its vjp in ATen ops, for forward mode and
// second order), fused/autograd.h (Autograd kernels and nodes); this file
// defines the operators and registers the kernels.

#include <string>
#include <vector>

// torch's headers before ours, in this order: g++ 12 then compiles each rule's
// source about 1 s (6%) faster (measured; same headers, same code).
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "fused/autograd.h"
#include "fused/kernels.h"
#include "unrollopt/ops.h"

namespace unrollopt::fused {

// The operators' CUDA entry in a build without CUDA kernels (a CUDA torch and no
// toolkit at build time): an error that says why and what to do, where the
// dispatcher would only say that it has no kernel.
[[noreturn]] void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack* stack);

template <class Rule>
struct Op {
  using K = Kernels<Rule>;
  using AG = Autograd<Rule>;

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
    m.impl(name.c_str(), TORCH_FN(K::template forward_kernel<Cuda>));
    m.impl((name + "_").c_str(), TORCH_FN(K::template inplace_kernel<Cuda>));
    m.impl((name + "_backward").c_str(), TORCH_FN(K::template backward_kernel<Cuda>));
  }
  static void impl_meta(torch::Library& m) {
    const std::string name = Rule::name;
    m.impl(name.c_str(), TORCH_FN(K::forward_meta));
    m.impl((name + "_").c_str(), TORCH_FN(K::inplace_meta));
    m.impl((name + "_backward").c_str(), TORCH_FN(K::backward_meta));
  }
  static void impl_no_cuda(torch::Library& m) {
    const std::string name = Rule::name;
    for (const std::string& op : {name, name + "_", name + "_backward"})
      m.impl(op.c_str(), torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernels>());
  }
  static void impl_autograd(torch::Library& m) {
    const std::string name = Rule::name;
    m.impl(name.c_str(), TORCH_FN(AG::forward));
    m.impl((name + "_").c_str(), TORCH_FN(AG::inplace));
    m.impl((name + "_backward").c_str(), TORCH_FN(AG::backward));
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
