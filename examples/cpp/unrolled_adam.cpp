// Meta-learns through three unrolled Adam steps with unrollopt's C++ API, and
// checks the meta-gradient against central finite differences.
//
// Inner problem: theta minimises |A theta - b|^2 + |theta - phi|^2 from theta0;
// outer objective: sum(theta_3^3). We want d outer / d phi.

#include <cmath>
#include <cstdio>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <unrollopt/unrollopt.h>

namespace {

at::Tensor unroll(const at::Tensor& a, const at::Tensor& b, const at::Tensor& theta0,
                  const at::Tensor& phi) {
  const unrollopt::Adam adam({.lr = 0.1, .weight_decay = 1e-3});
  std::vector<at::Tensor> params{theta0.clone().requires_grad_(true)};
  unrollopt::AdamState state = adam.init(params);
  for (int step = 0; step < 3; ++step) {
    const at::Tensor loss =
        (at::mv(a, params[0]) - b).square().sum() + (params[0] - phi).square().sum();
    const auto grads = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true,
                                             /*create_graph=*/true);
    std::vector<at::Tensor> updates;
    std::tie(updates, state) = adam.update(grads, state, params);
    params = unrollopt::apply_updates(params, updates);
  }
  return params[0].pow(3).sum();
}

}  // namespace

int main() {
  at::manual_seed(0);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor a = at::randn({8, 5}, f64), b = at::randn({8}, f64);
  const at::Tensor theta0 = at::randn({5}, f64);
  const at::Tensor phi = at::randn({5}, f64).requires_grad_(true);

  const at::Tensor meta_grad = torch::autograd::grad({unroll(a, b, theta0, phi)}, {phi})[0];

  double worst = 0;
  const double h = 1e-6;
  for (int64_t i = 0; i < phi.numel(); ++i) {
    const at::Tensor e = at::zeros({5}, f64).index_put_({i}, h);
    const double up = unroll(a, b, theta0, phi.detach() + e).item<double>();
    const double down = unroll(a, b, theta0, phi.detach() - e).item<double>();
    const double fd = (up - down) / (2 * h);
    const double exact = meta_grad[i].item<double>();
    std::printf("d outer / d phi[%lld]: unrollopt %+.10f   finite difference %+.10f\n",
                static_cast<long long>(i), exact, fd);
    worst = std::max(worst, std::abs(exact - fd) / std::max(1.0, std::abs(fd)));
  }
  std::printf("unrollopt %s: worst relative difference %.2e\n", unrollopt::version(), worst);
  return worst < 1e-6 ? 0 : 1;
}
