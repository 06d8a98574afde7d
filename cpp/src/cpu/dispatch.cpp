#include <cstdlib>
#include <string_view>

#include "kernels.h"

namespace unrollopt::cpu {

namespace {
const Kernels& choose() {
  const char* env = std::getenv("UNROLLOPT_CPU_CAPABILITY");
  const bool want_default = env != nullptr && std::string_view(env) == "default";
#if defined(__x86_64__) || defined(__i386__)
  if (!want_default && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return AVX2::kernels;
  }
#else
  (void)want_default;
#endif
  return DEFAULT::kernels;
}
}  // namespace

const Kernels& kernels() {
  static const Kernels& chosen = choose();
  return chosen;
}

}  // namespace unrollopt::cpu
