#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "unrollopt/unrollopt.h"

namespace unrollopt {

#ifdef UNROLLOPT_WITH_CUDA
constexpr bool kCudaKernels = true;
#else
constexpr bool kCudaKernels = false;  // (the operators' CUDA entry is an error saying why)
#endif

const char* version() { return UNROLLOPT_VERSION; }

bool accelerated_op_available(c10::Device device) noexcept {
  try {
    c10::DispatchKey key;
    if (device.is_cpu()) {
      key = c10::DispatchKey::CPU;
    } else if (device.is_cuda()) {
      if (!kCudaKernels) return false;
      const auto gpus = at::detail::getCUDAHooks().getNumGPUs();
      if (gpus == 0 || (device.has_index() && device.index() >= gpus)) return false;
      key = c10::DispatchKey::CUDA;
    } else if (device.is_meta()) {  // shapes only, as torch.compile traces them
      key = c10::DispatchKey::Meta;
    } else {
      return false;
    }
    const auto op = c10::Dispatcher::singleton().findSchema({"unrollopt::adam", ""});
    return op.has_value() && op->hasKernelForDispatchKey(key);
  } catch (...) {
    return false;
  }
}

}  // namespace unrollopt
