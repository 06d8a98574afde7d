#pragma once
// What every part of a rule's operators (fused_op.h) shares: the rule's counts,
// its state lists within the flat `states` argument, the argument checks, and
// the hyperparameters' values for the CPU kernels.

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/util/StringUtil.h>

#include "../checks.h"
#include "../cpu/kernels.h"
#include "schema.h"
#include "unrollopt/rules/rule.h"

namespace unrollopt::fused {

// Shared, rule-independent pieces (fused_op.cpp).
TensorVector contiguous(at::TensorList list);
TensorVector contiguous(const OptionalTensors& list);
TensorVector empty_like_all(at::TensorList list);
// Writes back into `targets` where the kernel worked on contiguous copies.
void copy_back(at::TensorList targets, at::TensorList worked);
TensorVector as_vector(const OptionalTensors& list);

template <class Rule>
struct Arguments {
  static constexpr size_t NS = Rule::states.size();
  static constexpr size_t NH = Rule::hyperparameters.size();
  static constexpr size_t NC = Rule::num_coef;
  static constexpr Counts counts{NS, NH, Rule::Options::names.size()};

  static std::string qualified(const char* suffix) {
    return std::string("unrollopt::") + Rule::name + suffix;
  }

  // The rule's state lists within `states`; all empty if `states` is.
  static std::array<at::TensorList, NS> split(at::TensorList states, size_t n) {
    std::array<at::TensorList, NS> out{};
    if (!states.empty()) {
      for (size_t k = 0; k < NS; ++k) out[k] = states.slice(k * n, n);
    }
    return out;
  }

  // The lists' counts are the schema's (schema.cpp checks each list's size).
  static void check(const char* op, at::TensorList grads, at::TensorList states,
                    at::TensorList params, const at::Tensor& step, at::TensorList hyper) {
    const auto lists = split(states, grads.size());
    std::array<NamedTensorList, NS> named;
    for (size_t k = 0; k < NS; ++k) named[k] = {Rule::states[k], lists[k]};
    check_parameter_lists(op, grads, named, params);
    check_scalars(op, step, hyper);
  }

  // The step and the hyperparameters.
  static void check_scalars(const char* op, const at::Tensor& step, at::TensorList hyper) {
    check_hyperparameter(op, "step", step);
    check_step(op, step);
    for (size_t i = 0; i < NH; ++i) check_hyperparameter(op, Rule::hyperparameters[i], hyper[i]);
  }

  // A weight decay needs params. Checked where the value can be read (checks.h).
  static void check_decay_params(at::TensorList hyper, at::TensorList params) {
    for (size_t i = 0; i < NH && params.empty(); ++i) {
      TORCH_CHECK_VALUE(std::string_view(Rule::hyperparameters[i]) != "weight_decay" ||
                            !readable(hyper[i]) || hyper[i].item<double>() == 0,
                        "unrollopt.", Rule::name, ": weight_decay is not 0, so params are needed");
    }
  }

  // The hyperparameters' values (CPU kernels only).
  struct Values {
    std::array<double, NH> hyper;
    double step;
    typename Rule::Options options;
    cpu::Scalars<Rule> kernel_scalars() const {
      return {Rule::template coef<double>(hyper, step, options)};
    }
  };
  static Values values(const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options,
                       at::TensorList params) {
    check_decay_params(hyper, params);
    Values v{{}, step.item<double>(), Rule::Options::read(options)};
    for (size_t i = 0; i < NH; ++i) v.hyper[i] = hyper[i].item<double>();
    return v;
  }

  // The CUDA kernels leave the step and the hyperparameters where they are: on
  // the GPU (read there) or on the CPU (read here, without a synchronisation).
  static at::Device check_cuda(const char* op, at::TensorList grads, const at::Tensor& step,
                               at::TensorList hyper, at::TensorList params) {
    check_decay_params(hyper, params);
    std::optional<at::Device> device;
    if (!grads.empty()) {
      TORCH_CHECK_VALUE(grads[0].is_cuda(), "unrollopt.", op,
                        ": the step or a hyperparameter is on a CUDA device but grads are on ",
                        grads[0].device());
      device = grads[0].device();
    }
    for (const at::Tensor* t : scalar_inputs(step, hyper)) {
      if (t->is_cpu()) continue;
      if (!device) device = t->device();
      TORCH_CHECK_VALUE(t->device() == *device, "unrollopt.", op,
                        ": the step and the hyperparameters must be on the CPU or on ", *device,
                        " (the grads' device), but one is on ", t->device());
    }
    TORCH_CHECK(device.has_value(), "unrollopt.", op, ": no tensor on a CUDA device");
    return *device;
  }
  static std::array<const at::Tensor*, 1 + NH> scalar_inputs(const at::Tensor& step,
                                                             at::TensorList hyper) {
    std::array<const at::Tensor*, 1 + NH> out{&step};
    for (size_t i = 0; i < NH; ++i) out[1 + i] = &hyper[i];
    return out;
  }
};

}  // namespace unrollopt::fused
