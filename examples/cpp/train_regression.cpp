// Ordinary libtorch training with unrollopt::optim::AdamW (the fused in-place
// step) next to torch::optim::AdamW from the same start: a small MLP fits a
// noisy sine. Exits non-zero unless the loss falls tenfold and both optimizers
// end at the same parameters (float64: each tensor to 1e-9 in norm).

#include <algorithm>
#include <cstdio>

#include <torch/nn.h>
#include <torch/optim.h>
#include <unrollopt/optim.h>

int main() {
  torch::manual_seed(0);
  const auto options = torch::TensorOptions().dtype(torch::kDouble);
  const auto x = torch::linspace(-3, 3, 256, options).unsqueeze(1);
  const auto y = torch::sin(x) + 0.05 * torch::randn({256, 1}, options);

  auto make = [] {
    torch::manual_seed(1);
    torch::nn::Sequential net(torch::nn::Linear(1, 32), torch::nn::Tanh(),
                              torch::nn::Linear(32, 1));
    net->to(torch::kDouble);
    return net;
  };
  auto ours = make(), theirs = make();
  unrollopt::optim::AdamW fused(ours->parameters(), {.lr = 1e-2, .weight_decay = 1e-4});
  torch::optim::AdamW reference(theirs->parameters(),
                                torch::optim::AdamWOptions(1e-2).weight_decay(1e-4));

  const auto step = [&](torch::nn::Sequential& net, torch::optim::Optimizer& opt) {
    opt.zero_grad();
    auto loss = torch::mse_loss(net->forward(x), y);
    loss.backward();
    opt.step();
    return loss.item<double>();
  };
  const double first = torch::mse_loss(ours->forward(x), y).item<double>();
  double last = first;
  for (int k = 0; k < 300; ++k) {
    last = step(ours, fused);
    step(theirs, reference);
  }
  double worst = 0;
  const auto a = ours->parameters(), b = theirs->parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, ((a[i] - b[i]).norm() / b[i].norm()).item<double>());
  }
  std::printf("loss %.4f -> %.4f; largest relative difference from torch::optim::AdamW %.2e\n",
              first, last, worst);
  return last < first / 10 && worst < 1e-9 ? 0 : 1;
}
