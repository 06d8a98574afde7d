#pragma once
// torch::optim optimizers whose step is one fused in-place call per parameter
// group, for ordinary (not differentiable) libtorch training:
//
//   #include <unrollopt/optim.h>
//   unrollopt::optim::Adam optimizer(model->parameters(), {.lr = 1e-3, .weight_decay = 1e-2});
//   for (...) {
//     optimizer.zero_grad();
//     loss_fn(model->forward(x), y).backward();
//     optimizer.step();
//   }
//
// Subclasses of torch::optim::Optimizer: parameter groups (each with its own
// options: a unrollopt::optim::GroupOptions<XOptions>, used as given; libtorch's
// own optimizers instead fill the fields a group leaves at their constructor
// defaults from the optimizer's defaults), zero_grad, step(closure),
// learning-rate schedulers (through get_lr/set_lr), torch::save / torch::load.
// The options are the functional optimizers' (unrollopt/optimizers.h), the
// update their math; the state keeps the step count and the operator's state
// tensors by name ("mu", "nu", "momentum_buffer", ...).

#include <string>
#include <utility>
#include <vector>

#include <torch/optim/optimizer.h>

#include "unrollopt/optimizers.h"

namespace unrollopt::optim {

// A parameter group's options: one of unrollopt/optimizers.h's XOptions.
template <class Options>
struct GroupOptions : torch::optim::OptimizerCloneableOptions<GroupOptions<Options>> {
  GroupOptions(Options options = {})
      : value(std::move(options)) {}  // NOLINT(google-explicit-constructor)
  // The defaults with this learning rate (torch::optim's XOptions(lr)).
  explicit GroupOptions(double lr) { value.lr = lr; }
  Options value;

  double get_lr() const override;
  void set_lr(double lr) override;
  void serialize(torch::serialize::OutputArchive& archive) const override;
  void serialize(torch::serialize::InputArchive& archive) override;
};

// A parameter's state: its step count and the operator's state tensors.
struct ParamState : torch::optim::OptimizerCloneableParamState<ParamState> {
  int64_t step = 0;
  // By the operator's state names, and a scalar state (NAdam's mu_product) by its name.
  std::vector<std::pair<std::string, at::Tensor>> tensors;

  // The state tensor `name`; undefined if the parameter has none.
  at::Tensor get(const std::string& name) const;
  // Replaces the state tensor `name`, or adds it.
  void set(const std::string& name, at::Tensor value);

  void serialize(torch::serialize::OutputArchive& archive) const override;
  void serialize(torch::serialize::InputArchive& archive) override;
};

template <class Options>
class Optimizer : public torch::optim::Optimizer {
 public:
  // Raises c10::ValueError for a setting out of range (every group's).
  explicit Optimizer(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                     Options defaults = {});
  explicit Optimizer(std::vector<at::Tensor> params, Options defaults = {})
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))}, std::move(defaults)) {}

  // torch::optim::Optimizer's, keeping the group's own options (the base class
  // keeps only those of its own optimizer types).
  void add_param_group(const torch::optim::OptimizerParamGroup& param_group);

  // One step of every parameter that has a gradient: one fused call per group
  // (per step count, where parameters of a group have taken different numbers).
  at::Tensor step(LossClosure closure = nullptr) override;

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  // Checks the options of group `index` and gives it those of `given`.
  void keep_options(size_t index, const torch::optim::OptimizerParamGroup& given);
};

#define UNROLLOPT_NAME_OPTIMIZER(Name) using Name = Optimizer<Name##Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_NAME_OPTIMIZER)
#undef UNROLLOPT_NAME_OPTIMIZER
using SGD = Sgd;  // torch::optim's spelling

}  // namespace unrollopt::optim
