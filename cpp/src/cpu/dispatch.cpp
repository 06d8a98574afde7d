#include <cstdlib>
#include <string_view>

#include "kernels.h"

namespace unrollopt::cpu {

bool use_avx2() {
  const char* env = std::getenv("UNROLLOPT_CPU_CAPABILITY");
  if (env != nullptr && std::string_view(env) == "default") return false;
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace unrollopt::cpu
