// The torch::optim optimizers of unrollopt/optim.h, one template over the
// optimizers' declarations (declaration.h): the step is the operator NAME_
// with update_params.

#include "unrollopt/optim.h"

#include <map>
#include <tuple>

#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/archive.h>

#include "declaration.h"
#include "functional.h"
#include "unrollopt/ops.h"

namespace unrollopt::optim {
namespace {

const std::string kStep = "step";

}  // namespace

template <class Options>
double GroupOptions<Options>::get_lr() const {
  return value.lr.value();
}

template <class Options>
void GroupOptions<Options>::set_lr(double lr) {
  // Schedulers change the rate between steps: checked here, not at every step.
  detail::check_setting(Options::name, "lr", lr);
  value.lr = lr;
}

template <class Options>
void GroupOptions<Options>::serialize(torch::serialize::OutputArchive& archive) const {
  for (const auto& f : Options::settings(value)) {
    std::visit(
        [&](const auto* v) {
          using T = std::decay_t<decltype(*v)>;
          if constexpr (std::is_same_v<T, Hyperparameter>) {
            archive.write(f.name, v->tensor().detach());
          } else {
            archive.write(f.name, c10::IValue(*v));
          }
        },
        f.value);
  }
}

// Every number must be there (an archive of other options is refused); a
// flag that is not keeps its value (archives written before amsgrad,
// centered and moment_requires_grad were saved).
template <class Options>
void GroupOptions<Options>::serialize(torch::serialize::InputArchive& archive) {
  for (const auto& f : Options::settings(value)) {
    std::visit(
        [&](auto* v) {
          using T = std::decay_t<decltype(*v)>;
          if constexpr (std::is_same_v<T, Hyperparameter>) {
            at::Tensor t;
            archive.read(f.name, t);
            *v = t;
          } else if constexpr (std::is_same_v<T, bool>) {
            c10::IValue iv;
            if (archive.try_read(f.name, iv)) *v = iv.toBool();
          } else {
            c10::IValue iv;
            archive.read(f.name, iv);
            *v = iv.toDouble();
          }
        },
        f.value);
  }
}

at::Tensor ParamState::get(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  return {};
}

void ParamState::set(const std::string& name, at::Tensor value) {
  for (auto& [n, t] : tensors) {
    if (n == name) {
      t = std::move(value);
      return;
    }
  }
  tensors.emplace_back(name, std::move(value));
}

void ParamState::serialize(torch::serialize::OutputArchive& archive) const {
  archive.write(kStep, c10::IValue(step));
  for (const auto& [name, t] : tensors) archive.write(name, t);
}

void ParamState::serialize(torch::serialize::InputArchive& archive) {
  tensors.clear();
  for (const auto& key : archive.keys()) {
    if (key == kStep) {
      c10::IValue iv;
      archive.read(key, iv);
      step = iv.toInt();
    } else {
      at::Tensor t;
      archive.read(key, t);
      tensors.emplace_back(key, t);
    }
  }
}

template <class Options>
Optimizer<Options>::Optimizer(const std::vector<torch::optim::OptimizerParamGroup>& param_groups,
                              Options defaults)
    : torch::optim::Optimizer(param_groups,
                              std::make_unique<GroupOptions<Options>>(std::move(defaults))) {
  // The base class's constructor kept the defaults for groups with options.
  for (size_t i = 0; i < param_groups.size(); ++i) keep_options(i, param_groups[i]);
}

template <class Options>
void Optimizer<Options>::add_param_group(const torch::optim::OptimizerParamGroup& param_group) {
  torch::optim::Optimizer::add_param_group(param_group);
  keep_options(param_groups_.size() - 1, param_group);
}

template <class Options>
void Optimizer<Options>::keep_options(size_t index,
                                      const torch::optim::OptimizerParamGroup& given) {
  if (given.has_options()) {
    const auto* options = dynamic_cast<const GroupOptions<Options>*>(&given.options());
    TORCH_CHECK_TYPE(options, "unrollopt.optim.", Options::name,
                     ": a parameter group's options must be GroupOptions of its options type");
    unrollopt::Optimizer<Options> checked(options->value);  // raises for a setting out of range
    param_groups_[index].set_options(given.options().clone());
  } else {
    const auto& options = static_cast<const GroupOptions<Options>&>(*defaults_);
    unrollopt::Optimizer<Options> checked(options.value);
  }
}

template <class Options>
at::Tensor Optimizer<Options>::step(LossClosure closure) {
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  at::NoGradGuard no_grad;
  for (auto& group : param_groups_) {
    const Options& o = static_cast<const GroupOptions<Options>&>(group.options()).value;
    auto a = detail::operator_arguments(o);
    const auto& state_names = a.description->states;
    // The parameters with a gradient, by the step they take (and the scalar state's value).
    std::map<std::pair<int64_t, double>, std::vector<std::pair<at::Tensor, ParamState*>>> buckets;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "unrollopt.optim.", Options::name,
                  " does not support sparse gradients");
      auto& slot = state_[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<ParamState>();
        for (const auto& name : state_names) {
          const double initial = detail::initial_value(o, name);
          fresh->tensors.emplace_back(name, at::full_like(p, initial, at::MemoryFormat::Preserve));
        }
        if constexpr (detail::HasScalarState<Options>) {
          fresh->tensors.emplace_back(Options::Rule::scalar.name,
                                      at::full({}, Options::Rule::scalar.initial, at::kDouble));
        }
        slot = std::move(fresh);
      }
      auto* state = static_cast<ParamState*>(slot.get());
      double product = 0.0;
      if constexpr (detail::HasScalarState<Options>) {
        const at::Tensor saved = state->get(Options::Rule::scalar.name);
        TORCH_CHECK_VALUE(saved.defined(), "unrollopt.optim.", Options::name,
                          ": a parameter's state lacks ", Options::Rule::scalar.name,
                          " (a state saved with other options?)");
        product = saved.template item<double>();
      }
      buckets[{state->step, product}].emplace_back(p, state);
    }
    for (auto& [key, members] : buckets) {
      const int64_t t = key.first + 1;
      std::vector<at::Tensor> params, grads, states;
      for (const auto& [p, state] : members) {
        params.push_back(p);
        grads.push_back(p.grad());
      }
      for (const auto& name : state_names) {
        for (const auto& [p, state] : members) {
          at::Tensor s = state->get(name);
          TORCH_CHECK_VALUE(s.defined(), "unrollopt.optim.", Options::name,
                            ": a parameter's state lacks ", name,
                            " (a state saved with other options?)");
          states.push_back(s);
        }
      }
      const at::Tensor step = at::scalar_tensor(t, at::kLong);
      at::Tensor next;
      if constexpr (detail::HasScalarState<Options>) {  // this bucket's
        a.hyper[a.scalar_index] = members.front().second->get(Options::Rule::scalar.name);
        next = ops::next_scalar(a.op, step, a.hyper, a.options);
        a.hyper[a.scalar_index] = next;
      }
      ops::fused_step_(a.op, params, grads, states, step, a.hyper, a.options,
                       /*update_params=*/true);
      for (auto& [p, state] : members) {
        state->step = t;
        if constexpr (detail::HasScalarState<Options>) state->set(Options::Rule::scalar.name, next);
      }
    }
  }
  return loss;
}

template <class Options>
void Optimizer<Options>::save(torch::serialize::OutputArchive& archive) const {
  torch::optim::serialize<ParamState, GroupOptions<Options>>(archive, *this);
}

template <class Options>
void Optimizer<Options>::load(torch::serialize::InputArchive& archive) {
  torch::optim::serialize<ParamState, GroupOptions<Options>>(archive, *this);
}

#define UNROLLOPT_OPTIM(Name)                  \
  template struct GroupOptions<Name##Options>; \
  template class Optimizer<Name##Options>;
UNROLLOPT_FOR_EACH_OPTIMIZER(UNROLLOPT_OPTIM)
#undef UNROLLOPT_OPTIM

}  // namespace unrollopt::optim
