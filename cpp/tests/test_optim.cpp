// The torch::optim optimizers (unrollopt/optim.h): trajectories against
// libtorch's (Adam, AdamW, SGD, RMSprop, Adagrad) with two parameter groups,
// against the functional C++ optimizers for the others; zero_grad, closures,
// parameters without gradients, learning-rate schedulers, save and load.

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <sstream>

#include <torch/optim.h>
#include <torch/serialize.h>

#include "testing.h"
#include "unrollopt/optim.h"
#include "unrollopt/unrollopt.h"

namespace {

using namespace unrollopt::testing;
namespace to = torch::optim;
namespace uo = unrollopt::optim;

constexpr int kSteps = 8;

Problem problem(uint64_t seed) { return unrollopt::testing::problem(seed, {1, 7, 33, 5}, kSteps); }

TensorVector leaves(const Problem& pr) {
  TensorVector out;
  for (const auto& p : pr.params) out.push_back(p.clone().set_requires_grad(true));
  return out;
}

// Steps `opt` (over `params`) through the problem's gradients; the last
// parameter gets none at odd steps, so that its step count lags.
void train(to::Optimizer& opt, const TensorVector& params, const Problem& pr, int from = 0,
           int to_step = kSteps) {
  for (int k = from; k < to_step; ++k) {
    opt.zero_grad();
    for (size_t i = 0; i < params.size(); ++i) {
      if (i + 1 == params.size() && k % 2 == 1) continue;
      params[i].mutable_grad() = pr.grads[k][i].clone();
    }
    opt.step();
  }
}

// Two groups, each with its own options. (The optimizers' defaults are
// torch::optim's constructor defaults: torch::optim fills a group's fields that
// equal those from the optimizer's defaults, where unrollopt uses a group's
// options as given.)
template <class Optimizer, class Options>
TensorVector trained(const Options& first, const Options& second, const Options& defaults,
                     const Problem& pr) {
  const TensorVector params = leaves(pr);
  std::vector<to::OptimizerParamGroup> groups;
  for (const auto& [options, members] : {std::pair{first, TensorVector{params[0], params[1]}},
                                         std::pair{second, TensorVector{params[2], params[3]}}}) {
    if constexpr (std::is_base_of_v<to::OptimizerOptions, Options>) {
      groups.emplace_back(members, std::make_unique<Options>(options));
    } else {
      groups.emplace_back(members, std::make_unique<uo::GroupOptions<Options>>(options));
    }
  }
  Optimizer opt(groups, defaults);
  train(opt, params, pr);
  return params;
}

void expect_all_close(const TensorVector& a, const TensorVector& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    expect_close(a[i].detach(), b[i].detach(), 1e-12, 1e-14, what + " [" + std::to_string(i) + "]");
  }
}

TEST(Optim, MatchesTorchOptimWithParameterGroups) {
  const Problem pr = problem(5);
  using Betas = std::tuple<double, double>;
  expect_all_close(
      trained<uo::Adam>(unrollopt::AdamOptions{.lr = 0.1},
                        unrollopt::AdamOptions{.lr = 0.05, .beta1 = 0.8, .weight_decay = 0.1},
                        unrollopt::AdamOptions{}, pr),
      trained<to::Adam>(to::AdamOptions(0.1),
                        to::AdamOptions(0.05).betas(Betas{0.8, 0.999}).weight_decay(0.1),
                        to::AdamOptions(), pr),
      "Adam");
  expect_all_close(
      trained<uo::AdamW>(unrollopt::AdamWOptions{.lr = 0.1, .amsgrad = true},
                         unrollopt::AdamWOptions{.lr = 0.05, .weight_decay = 0.5, .amsgrad = true},
                         unrollopt::AdamWOptions{}, pr),
      trained<to::AdamW>(to::AdamWOptions(0.1).amsgrad(true),
                         to::AdamWOptions(0.05).weight_decay(0.5).amsgrad(true), to::AdamWOptions(),
                         pr),
      "AdamW amsgrad");
  expect_all_close(
      trained<uo::SGD>(
          unrollopt::SgdOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true},
          unrollopt::SgdOptions{.lr = 0.2, .momentum = 0.5, .dampening = 0.1, .weight_decay = 0.01},
          unrollopt::SgdOptions{}, pr),
      trained<to::SGD>(to::SGDOptions(0.1).momentum(0.9).nesterov(true),
                       to::SGDOptions(0.2).momentum(0.5).dampening(0.1).weight_decay(0.01),
                       to::SGDOptions(1e-3), pr),
      "SGD");
  expect_all_close(
      trained<uo::RMSprop>(unrollopt::RMSpropOptions{.lr = 0.01, .centered = true},
                           unrollopt::RMSpropOptions{.lr = 0.02, .alpha = 0.9, .momentum = 0.5},
                           unrollopt::RMSpropOptions{}, pr),
      trained<to::RMSprop>(to::RMSpropOptions(0.01).centered(true),
                           to::RMSpropOptions(0.02).alpha(0.9).momentum(0.5), to::RMSpropOptions(),
                           pr),
      "RMSprop");
  expect_all_close(
      trained<uo::Adagrad>(unrollopt::AdagradOptions{.lr = 0.1, .lr_decay = 0.01},
                           unrollopt::AdagradOptions{.lr = 0.1, .weight_decay = 0.1},
                           unrollopt::AdagradOptions{}, pr),
      trained<to::Adagrad>(to::AdagradOptions(0.1).lr_decay(0.01),
                           to::AdagradOptions(0.1).weight_decay(0.1), to::AdagradOptions(), pr),
      "Adagrad");
}

// The functional optimizer, stepping each parameter the same way (its own
// step count, as the lagging last parameter needs).
template <class Functional>
TensorVector functional_trajectory(const typename Functional::Options& options, const Problem& pr) {
  const Functional opt(options);
  TensorVector params = pr.params;
  std::vector<typename Functional::State> states;
  for (const auto& p : params) states.push_back(opt.init({p}));
  for (int k = 0; k < kSteps; ++k) {
    for (size_t i = 0; i < params.size(); ++i) {
      if (i + 1 == params.size() && k % 2 == 1) continue;
      auto [u, next] = opt.update({pr.grads[k][i]}, states[i], {params[i]});
      params[i] = params[i] + u[0];
      states[i] = std::move(next);
    }
  }
  return params;
}

template <class Functional, class Optim>
void expect_same_as_functional(const typename Functional::Options& options,
                               const std::string& what) {
  const Problem pr = problem(6);
  const TensorVector params = leaves(pr);
  Optim opt(params, options);
  train(opt, params, pr);
  expect_all_close(params, functional_trajectory<Functional>(options, pr), what);
}

TEST(Optim, OthersMatchTheFunctionalOptimizers) {
  expect_same_as_functional<unrollopt::Adamax, uo::Adamax>({.lr = 0.05, .weight_decay = 0.01},
                                                           "Adamax");
  expect_same_as_functional<unrollopt::RAdam, uo::RAdam>(
      {.lr = 0.05, .weight_decay = 0.01, .decoupled_weight_decay = true}, "RAdam");
  expect_same_as_functional<unrollopt::NAdam, uo::NAdam>({.lr = 0.05, .weight_decay = 0.01},
                                                         "NAdam");
  expect_same_as_functional<unrollopt::Adadelta, uo::Adadelta>({.lr = 0.5, .weight_decay = 0.01},
                                                               "Adadelta");
  expect_same_as_functional<unrollopt::RMSprop, uo::RMSprop>(
      {.lr = 0.01, .momentum = 0.5, .initial_scale = 0.1, .nesterov = true}, "RMSprop nesterov");
  expect_same_as_functional<unrollopt::Lion, uo::Lion>({.lr = 0.01, .weight_decay = 0.1}, "Lion");
  expect_same_as_functional<unrollopt::Adan, uo::Adan>({.lr = 0.05, .weight_decay = 0.1}, "Adan");
}

TEST(Optim, ClosureZeroGradAndParametersWithoutGradients) {
  const Problem pr = problem(7);
  const TensorVector params = leaves(pr);
  uo::Adam opt(params, {.lr = 0.1});
  const auto loss = opt.step([&] {
    opt.zero_grad();
    auto l = (params[0] * params[0]).sum() + params[1].sum();
    l.backward();
    return l;
  });
  EXPECT_TRUE(loss.defined());
  EXPECT_EQ(opt.state().size(), 2u);  // params[2], params[3] had no gradient: no state
  EXPECT_TRUE(torch::equal(params[2], pr.params[2]));
  const auto& state =
      static_cast<const uo::ParamState&>(*opt.state().at(params[0].unsafeGetTensorImpl()));
  EXPECT_EQ(state.step, 1);
  EXPECT_TRUE(state.get("mu").defined() && state.get("nu").defined());
  opt.zero_grad();
  EXPECT_FALSE(params[0].grad().defined());
}

TEST(Optim, SaveAndLoadContinueTheTrajectory) {
  const Problem pr = problem(8);
  const TensorVector straight = leaves(pr);
  uo::NAdam uninterrupted(straight, {.lr = 0.05, .weight_decay = 0.01});
  train(uninterrupted, straight, pr);

  const TensorVector resumed = leaves(pr);
  std::stringstream buffer;
  {
    uo::NAdam first(resumed, {.lr = 0.05, .weight_decay = 0.01});
    train(first, resumed, pr, 0, 3);
    torch::save(first, buffer);
  }
  uo::NAdam second(resumed, {.lr = 0.5});  // the options come from the file too
  torch::load(second, buffer);
  EXPECT_DOUBLE_EQ(second.param_groups()[0].options().get_lr(), 0.05);
  train(second, resumed, pr, 3, kSteps);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(torch::equal(straight[i], resumed[i])) << i;
  }
}

// Every setting is saved. On loading, a flag the archive lacks (written before
// amsgrad, centered and moment_requires_grad were saved) keeps its value; a
// number it lacks (an archive of another optimizer's options) is an error.
TEST(Optim, GroupOptionsLoadArchivesThatLackAFlag) {
  const auto archive_of = [](bool with_beta2) {
    torch::serialize::OutputArchive out;
    out.write("lr", torch::tensor(0.25, torch::kDouble));
    out.write("beta1", torch::tensor(0.8, torch::kDouble));
    if (with_beta2) out.write("beta2", torch::tensor(0.99, torch::kDouble));
    out.write("eps", c10::IValue(1e-6));
    out.write("eps_root", c10::IValue(0.0));
    out.write("weight_decay", torch::tensor(0.0, torch::kDouble));
    out.write("maximize", c10::IValue(true));
    auto buffer = std::make_shared<std::stringstream>();
    out.save_to(*buffer);
    return buffer;
  };
  torch::serialize::InputArchive in;
  in.load_from(*archive_of(true));
  uo::GroupOptions<unrollopt::AdamOptions> options(unrollopt::AdamOptions{.amsgrad = true});
  options.serialize(in);
  EXPECT_DOUBLE_EQ(options.get_lr(), 0.25);
  EXPECT_DOUBLE_EQ(options.value.beta2.value(), 0.99);
  EXPECT_DOUBLE_EQ(options.value.eps, 1e-6);
  EXPECT_TRUE(options.value.maximize);
  EXPECT_TRUE(options.value.amsgrad);

  torch::serialize::InputArchive lacking;
  lacking.load_from(*archive_of(false));
  EXPECT_THROW(options.serialize(lacking), c10::Error);

  torch::serialize::OutputArchive all;
  options.serialize(all);
  std::stringstream saved;
  all.save_to(saved);
  torch::serialize::InputArchive read;
  read.load_from(saved);
  const std::vector<std::string> keys = read.keys();
  for (const auto& field : unrollopt::AdamOptions::settings(options.value)) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), field.name), keys.end()) << field.name;
  }
}

TEST(Optim, LearningRateSchedulersSetTheGroupsRate) {
  const Problem pr = problem(9);
  const TensorVector params = leaves(pr);
  uo::SGD opt(params, {.lr = 0.1, .momentum = 0.9});
  to::StepLR scheduler(opt, /*step_size=*/2, /*gamma=*/0.5);
  for (int k = 0; k < 4; ++k) {
    train(opt, params, pr, k, k + 1);
    scheduler.step();
  }
  // StepLR halves the rate where its count (0, 1, 2, 3 here) is a positive multiple of 2.
  EXPECT_DOUBLE_EQ(opt.param_groups()[0].options().get_lr(), 0.05);
}

TEST(Optim, SettingsOutOfRangeAreRefused) {
  const TensorVector params{at::ones({2}, kF64).set_requires_grad(true)};
  EXPECT_THROW(uo::Adam(params, {.beta2 = 1.0}), c10::ValueError);
  EXPECT_THROW(uo::SGD(params, {.lr = 0.1, .nesterov = true}), c10::ValueError);
  std::vector<to::OptimizerParamGroup> groups;
  groups.emplace_back(params, std::make_unique<uo::GroupOptions<unrollopt::RMSpropOptions>>(
                                  unrollopt::RMSpropOptions{.alpha = 2.0}));
  EXPECT_THROW(uo::RMSprop(groups, {}), c10::ValueError);
}

}  // namespace
