// One optimizer step in a libtorch program: unrollopt::optim's fused in-place
// step against torch::optim's (a loop of unfused tensor ops), for Adam, AdamW,
// SGD with momentum and RMSprop, on two float32 models: many small tensors
// (100 x 10,000 values) and one large one (2^22 values). Interleaved calls,
// medians; the load average before and after. The floor is the bytes an ideal
// step moves (each tensor it reads and writes, once) at the bandwidth of a
// copy between two 2^24-value tensors, measured here first.
//
//   unrollopt_bench_optim [--repeats N] [--threads T] [--quick]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include "unrollopt/optim.h"

namespace {

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string one;
  f >> one;
  return one.empty() ? "?" : one;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

struct Variant {
  std::string name;
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::vector<double> times;
};

std::vector<torch::Tensor> model(const std::vector<int64_t>& sizes) {
  std::vector<torch::Tensor> params;
  for (int64_t n : sizes) {
    auto p = torch::randn({n}).requires_grad_(true);
    p.mutable_grad() = torch::randn({n});
    params.push_back(p);
  }
  return params;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Bytes per second of dst.copy_(src), 2^24 float32 values (far beyond the caches).
double copy_bandwidth(int repeats) {
  const auto src = torch::randn({1 << 24}), dst = torch::empty({1 << 24});
  std::vector<double> times;
  for (int r = 0; r < repeats + 2; ++r) {
    const auto start = std::chrono::steady_clock::now();
    dst.copy_(src);
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return 2.0 * static_cast<double>(src.nbytes()) / median(times);
}

using Make = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>;

// `tensors`: how many tensors of the parameters' size an ideal step reads and writes.
void compare(const std::string& optimizer, const std::string& shape,
             const std::vector<int64_t>& sizes, int tensors, double bandwidth, const Make& ours,
             const Make& theirs, int repeats) {
  std::vector<Variant> variants(2);
  variants[0].name = "unrollopt::optim";
  variants[1].name = "torch::optim";
  for (size_t v = 0; v < 2; ++v) {
    variants[v].params = model(sizes);
    variants[v].opt = (v == 0 ? ours : theirs)(variants[v].params);
    for (int k = 0; k < 3; ++k) variants[v].opt->step();  // warm-up: states made
  }
  for (int r = 0; r < repeats; ++r) {
    for (auto& v : variants) {
      const auto start = std::chrono::steady_clock::now();
      v.opt->step();
      v.times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
  }
  const double a = median(variants[0].times), b = median(variants[1].times);
  double values = 0;
  for (int64_t n : sizes) values += static_cast<double>(n);
  const double floor = 1e3 * tensors * values * sizeof(float) / bandwidth;
  std::printf("| %s | %s | %.3f | %.3f | %.3f | %.2f | %.2f |\n", optimizer.c_str(), shape.c_str(),
              floor, a, b, a / floor, b / a);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 50, threads = 0;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--repeats" && i + 1 < argc) repeats = std::atoi(argv[++i]);
    if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    if (arg == "--quick") quick = true;
  }
  if (threads > 0) torch::set_num_threads(threads);
  if (quick) repeats = 3;
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  const std::string before = load_average();

  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{
      {"100 x 10^4", std::vector<int64_t>(100, quick ? 1000 : 10000)},
      {"1 x 2^22", {quick ? 1 << 16 : 1 << 22}}};
  const double bandwidth = copy_bandwidth(quick ? 1 : 10);
  std::printf(
      "| optimizer | tensors | floor (ms) | unrollopt::optim (ms) | torch::optim (ms) | "
      "unrollopt / floor | torch::optim / unrollopt |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& [shape, sizes] : shapes) {
    namespace uo = unrollopt::optim;
    namespace to = torch::optim;
    compare(
        "Adam", shape, sizes, 7, bandwidth,
        [](auto p) { return std::make_unique<uo::Adam>(p, unrollopt::AdamOptions{.lr = 1e-3}); },
        [](auto p) { return std::make_unique<to::Adam>(p, to::AdamOptions(1e-3)); }, repeats);
    compare(
        "AdamW", shape, sizes, 7, bandwidth,
        [](auto p) { return std::make_unique<uo::AdamW>(p, unrollopt::AdamWOptions{.lr = 1e-3}); },
        [](auto p) { return std::make_unique<to::AdamW>(p, to::AdamWOptions(1e-3)); }, repeats);
    compare(
        "SGD (momentum 0.9)", shape, sizes, 5, bandwidth,
        [](auto p) {
          return std::make_unique<uo::SGD>(p, unrollopt::SgdOptions{.lr = 1e-3, .momentum = 0.9});
        },
        [](auto p) { return std::make_unique<to::SGD>(p, to::SGDOptions(1e-3).momentum(0.9)); },
        repeats);
    compare(
        "RMSprop", shape, sizes, 5, bandwidth,
        [](auto p) {
          return std::make_unique<uo::RMSprop>(p, unrollopt::RMSpropOptions{.lr = 1e-3});
        },
        [](auto p) { return std::make_unique<to::RMSprop>(p, to::RMSpropOptions(1e-3)); }, repeats);
  }
  std::printf(
      "\n%s, %d thread(s); torch %s; copy bandwidth %.1f GB/s; load average %s before, %s "
      "after; medians of %d interleaved steps after 3 warm-up steps, float32.\n",
      cpu_model().c_str(), torch::get_num_threads(), TORCH_VERSION, bandwidth / 1e9, before.c_str(),
      load_average().c_str(), repeats);
  return 0;
}
