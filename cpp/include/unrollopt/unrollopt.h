#pragma once
// unrollopt: differentiable optimizer steps for libtorch, with fused kernels and
// hand-written exact backward passes.

#include <c10/core/Device.h>

#include "unrollopt/hyperparameter.h"
#include "unrollopt/ops.h"
#include "unrollopt/optimizers.h"

namespace unrollopt {

// The library's version, e.g. "0.1.0".
const char* version();

// Whether the fused operators have a kernel for `device`: the CPU always, meta
// (shapes only) always, CUDA where built with it and that GPU is present. Never
// throws.
bool accelerated_op_available(c10::Device device) noexcept;

}  // namespace unrollopt
