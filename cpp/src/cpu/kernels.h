#pragma once
// The fused CPU kernels of every optimizer rule. cpu/kernels.cpp is compiled once
// per CPU capability (DEFAULT, AVX2) into its own namespace; kernels<Rule>()
// picks the best one the running CPU supports. Inputs are contiguous and
// already checked.

#include <array>

#include <ATen/core/Tensor.h>

#include "../tensor_lists.h"

namespace unrollopt::cpu {

using unrollopt::Lists;  // shared with the CUDA kernels

// The step's coefficients (Rule::coef), computed by the caller: the code
// compiled per CPU capability holds no scalar math that others could link to.
template <class Rule>
struct Scalars {
  std::array<double, Rule::num_coef> coef;
};

// The cotangents of a step's coefficients, summed over elements: only those
// `needed` (the others stay 0).
template <class Rule>
struct CoefGrads {
  std::array<bool, Rule::num_coef> needed;
  std::array<double, Rule::num_coef> sums;
};

template <class Rule>
struct Kernels {
  const char* capability;

  // Writes the update and the new states (which may alias the inputs); with
  // `add_to_param` the update output receives p + update instead.
  void (*forward)(const Lists<Rule>& in, at::TensorList update_out,
                  const std::array<at::TensorList, Rule::states.size()>& states_out,
                  bool add_to_param, const Scalars<Rule>& s);

  // The vector-Jacobian product of forward; with `coef_grads` non-null, also
  // the needed coefficient cotangents.
  void (*backward)(at::TensorList grad_update,
                   const std::array<at::TensorList, Rule::states.size()>& grad_states,
                   const Lists<Rule>& in, const Lists<Rule>& grads_out, const Scalars<Rule>& s,
                   CoefGrads<Rule>* coef_grads);
};

namespace DEFAULT {
template <class Rule>
Kernels<Rule> kernels();
}
namespace AVX2 {
template <class Rule>
Kernels<Rule> kernels();
}

// Whether to use the AVX2 kernels: where the CPU has AVX2 and FMA, unless the
// environment variable UNROLLOPT_CPU_CAPABILITY=default asks for the portable ones.
bool use_avx2();

template <class Rule>
const Kernels<Rule>& kernels() {
#if defined(__x86_64__) || defined(__i386__)  // where the build makes the AVX2 variant
  static const Kernels<Rule> chosen = use_avx2() ? AVX2::kernels<Rule>() : DEFAULT::kernels<Rule>();
#else
  static const Kernels<Rule> chosen = DEFAULT::kernels<Rule>();
#endif
  return chosen;
}

}  // namespace unrollopt::cpu
