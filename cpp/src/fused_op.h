#pragma once
// The operators of an optimizer rule (rules/rule.h), for any rule, with typed
// schemas made from the rule's names (fused/schema.h has Adam's):
//
//   NAME           out of place and differentiable (its Autograd kernel runs
//                  NAME_backward): -> (updates, new states)
//   NAME_plain     the same step in ATen operations (composite.h: the rule on
//                  tensors), which autograd differentiates and torch.compile
//                  and vmap decompose: the plain path (use_accelerated_op=False).
//   NAME_          in place: with update_params, params += update; otherwise
//                  grads are overwritten by the updates. Not differentiable.
//   NAME_backward  the vector-Jacobian product of NAME; output_mask selects its
//                  outputs (unselected lists are empty, unselected
//                  hyperparameter gradients zeros). Itself differentiable.
//   NAME_next_S    for a rule with a scalar state S (NAdam's mu_product): its
//                  value after a step, in ATen operations, as NAME_plain.
//
// The fused ones have CPU, Meta and Autograd kernels, and CUDA ones in a CUDA
// build, registered by UNROLLOPT_REGISTER_RULE in a source CMake makes for each rule
// of rules/all.h; their vmap rules are Python's (python/unrollopt/_vmap.py:
// torch.func is Python's, and the functorch C++ headers of the torch wheels do
// not compile outside torch's own build). NAME and NAME_backward also have
// decompositions (CompositeImplicitAutograd kernels: the rule's step and vjp
// in ATen operations), which torch.compile's Inductor compiles instead of the
// kernels.

// The parts, each a struct template over the rule: fused/arguments.h (counts,
// checks, values), fused/kernels.h (CPU, CUDA and Meta kernels),
// fused/composite.h (the step and its vjp in ATen ops, for forward mode and
// second order), fused/autograd.h (Autograd kernels and nodes). The kernels
// take the arguments as lists (all state lists in one, the hyperparameters in
// one, the options as numbers); fused/schema.h converts. This file defines the
// operators and registers the kernels.

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
#include "fused/schema.h"
#include "unrollopt/ops.h"

namespace unrollopt::fused {

// The operators' CUDA entry in a build without CUDA kernels (a CUDA torch and no
// toolkit at build time): an error that says why and what to do, where the
// dispatcher would only say that it has no kernel.
[[noreturn]] void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack* stack);
// The error for an operator call on top of the stack with a tensor on a device
// where the fused kernels do not run (unrollopt::accelerated_op_available).
void check_kernels_run(const c10::OperatorHandle& op, const torch::jit::Stack& stack);

template <class Rule>
struct Op {
  using K = Kernels<Rule>;
  using AG = Autograd<Rule>;
  static constexpr Counts C = Arguments<Rule>::counts;

  static ops::OperatorDescription names() {
    const auto& o = Rule::Options::names;
    return {{Rule::states.begin(), Rule::states.end()},
            {Rule::hyperparameters.begin(), Rule::hyperparameters.end()},
            {o.begin(), o.end()},
            {o.end() - Rule::Options::num_flags, o.end()}};
  }
  static void define(torch::Library& m) {
    const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
    const char* scalar = nullptr;
    if constexpr (requires { Rule::scalar; }) scalar = Rule::scalar.name;
    for (const auto& schema : schemas(Rule::name, names(), scalar)) m.def(schema.c_str(), tags);
  }
  // The kernels (over lists) as boxed kernels of the typed operators.
  template <auto Forward, auto Inplace, auto Backward>
  static void impl(torch::Library& m) {
    const std::string name = Rule::name;
    using F = torch::CppFunction;
    m.impl(name.c_str(), F::makeFromBoxedFunction<&boxed_forward<Forward, C>>());
    m.impl((name + "_").c_str(), F::makeFromBoxedFunction<&boxed_inplace<Inplace, C>>());
    m.impl((name + "_backward").c_str(), F::makeFromBoxedFunction<&boxed_backward<Backward, C>>());
  }
  template <bool Cuda>
  static void impl_device(torch::Library& m) {
    impl<&K::template forward_kernel<Cuda>, &K::template inplace_kernel<Cuda>,
         &K::template backward_kernel<Cuda>>(m);
  }
  static void impl_meta(torch::Library& m) {
    impl<&K::forward_meta, &K::inplace_meta, &K::backward_meta>(m);
  }
  static void impl_autograd(torch::Library& m) {
    const std::string name = Rule::name;
    using F = torch::CppFunction;
    m.impl(name.c_str(), F::makeFromBoxedFunction<&AG::forward>());
    m.impl((name + "_").c_str(), F::makeFromBoxedFunction<&AG::inplace>());
    m.impl((name + "_backward").c_str(), F::makeFromBoxedFunction<&AG::backward>());
  }
  // NAME_plain (and NAME_next_S): one kernel for every device and for
  // autograd (CompositeImplicitAutograd), and the same one under vmap (the
  // ATen operations it calls batch themselves).
  static void impl_plain(torch::Library& m) {
    using F = torch::CppFunction;
    m.impl((std::string(Rule::name) + "_plain").c_str(),
           F::makeFromBoxedFunction<&boxed_forward<&Composite<Rule>::forward, C>>());
    if constexpr (requires { Rule::scalar; }) {
      m.impl((std::string(Rule::name) + "_next_" + Rule::scalar.name).c_str(),
             F::makeFromBoxedFunction<&boxed_next_scalar>());
    }
  }
  // NAME and NAME_backward's decompositions: the rule's step and its vjp in
  // ATen operations (composite.h), which torch.compile's Inductor takes instead
  // of the kernels (python/unrollopt/_inductor.py) to fuse them with the code
  // around them. Registered as CompositeImplicitAutograd kernels, which the
  // dispatcher would also run on a device without fused kernels: there they
  // refuse, as without them.
  static void impl_decompositions(torch::Library& m) {
    using F = torch::CppFunction;
    const std::string name = Rule::name;
    m.impl(name.c_str(), F::makeFromBoxedFunction<
                             &on_fused_devices<&boxed_forward<&Composite<Rule>::forward, C>>>());
    m.impl((name + "_backward").c_str(),
           F::makeFromBoxedFunction<
               &on_fused_devices<&boxed_backward<&Composite<Rule>::backward, C>>>());
  }
  template <void (*Boxed)(const c10::OperatorHandle&, torch::jit::Stack*)>
  static void on_fused_devices(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
    check_kernels_run(op, *stack);
    Boxed(op, stack);
  }
  static void boxed_next_scalar(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
    const StepArguments a = read_scalars(*stack, C);
    drop_arguments(op, *stack);
    stack->emplace_back(Composite<Rule>::next_scalar(a.step, a.hyper, a.options));
  }
  static void impl_no_cuda(torch::Library& m) {
    const std::string name = Rule::name;
    for (const std::string& op : {name, name + "_", name + "_backward"})
      m.impl(op.c_str(), torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernels>());
  }
};

}  // namespace unrollopt::fused

// Registers the operators of a rule; used once, in the rule's source file.
#define UNROLLOPT_REGISTER_RULE(Rule)                                                          \
  TORCH_LIBRARY_FRAGMENT(unrollopt, m) { unrollopt::fused::Op<Rule>::define(m); }              \
  TORCH_LIBRARY_IMPL(unrollopt, CPU, m) { unrollopt::fused::Op<Rule>::impl_device<false>(m); } \
  TORCH_LIBRARY_IMPL(unrollopt, Meta, m) { unrollopt::fused::Op<Rule>::impl_meta(m); }         \
  TORCH_LIBRARY_IMPL(unrollopt, Autograd, m) { unrollopt::fused::Op<Rule>::impl_autograd(m); } \
  TORCH_LIBRARY_IMPL(unrollopt, CompositeImplicitAutograd, m) {                                \
    unrollopt::fused::Op<Rule>::impl_plain(m);                                                 \
    unrollopt::fused::Op<Rule>::impl_decompositions(m);                                        \
  }                                                                                            \
  TORCH_LIBRARY_IMPL(unrollopt, FuncTorchBatched, m) {                                         \
    unrollopt::fused::Op<Rule>::impl_plain(m);                                                 \
  }                                                                                            \
  UNROLLOPT_REGISTER_CUDA(Rule)

#ifdef UNROLLOPT_WITH_CUDA
#define UNROLLOPT_REGISTER_CUDA(Rule) \
  TORCH_LIBRARY_IMPL(unrollopt, CUDA, m) { unrollopt::fused::Op<Rule>::impl_device<true>(m); }
#else
#define UNROLLOPT_REGISTER_CUDA(Rule) \
  TORCH_LIBRARY_IMPL(unrollopt, CUDA, m) { unrollopt::fused::Op<Rule>::impl_no_cuda(m); }
#endif
