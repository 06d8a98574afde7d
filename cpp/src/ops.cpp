// The C++ entry points of the operators: typed calls through the dispatcher, so
// that C++ callers get the same Autograd, CPU and Meta kernels as Python.

#include "unrollopt/ops.h"

#include <algorithm>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/StringUtil.h>

namespace unrollopt::ops {
namespace {
// The optimizer names that have operators, sorted and comma-separated.
std::string known_optimizers() {
  constexpr std::string_view prefix = "unrollopt::", backward = "_backward";
  std::vector<std::string> names;
  for (const c10::OperatorName& op : c10::Dispatcher::singleton().getAllOpNames()) {
    const std::string_view name = op.name;
    if (name.substr(0, prefix.size()) != prefix || name.back() == '_') continue;
    if (name.size() > backward.size() && name.substr(name.size() - backward.size()) == backward) continue;
    names.emplace_back(name.substr(prefix.size()));
  }
  std::sort(names.begin(), names.end());
  return c10::Join(", ", names);
}

template <class Signature>
c10::TypedOperatorHandle<Signature> op(std::string_view optimizer, const char* suffix) {
  const std::string name = "unrollopt::" + std::string(optimizer) + suffix;
  const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
  TORCH_CHECK_VALUE(handle.has_value(), "unrollopt::ops: no optimizer named \"", optimizer,
                    "\"; the operators are: ", known_optimizers());
  return handle->typed<Signature>();
}
}  // namespace

std::tuple<TensorVector, TensorVector> fused_step(std::string_view optimizer,
                                                  at::TensorList grads, at::TensorList states,
                                                  at::TensorList params, const at::Tensor& step,
                                                  at::TensorList hyperparameters,
                                                  c10::ArrayRef<double> options) {
  return op<std::tuple<TensorVector, TensorVector>(at::TensorList, at::TensorList,
                                                   at::TensorList, const at::Tensor&,
                                                   at::TensorList, c10::ArrayRef<double>)>(
             optimizer, "")
      .call(grads, states, params, step, hyperparameters, options);
}

void fused_step_(std::string_view optimizer, at::TensorList params, at::TensorList grads,
                 at::TensorList states, const at::Tensor& step,
                 at::TensorList hyperparameters, c10::ArrayRef<double> options,
                 bool update_params) {
  op<void(at::TensorList, at::TensorList, at::TensorList, const at::Tensor&, at::TensorList,
          c10::ArrayRef<double>, bool)>(optimizer, "_")
      .call(params, grads, states, step, hyperparameters, options, update_params);
}

std::tuple<TensorVector, TensorVector, TensorVector, TensorVector> fused_step_backward(
    std::string_view optimizer, const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_states, at::TensorList grads,
    at::TensorList states, at::TensorList params, const at::Tensor& step,
    at::TensorList hyperparameters, c10::ArrayRef<double> options,
    const c10::List<bool>& output_mask) {
  using Result = std::tuple<TensorVector, TensorVector, TensorVector, TensorVector>;
  return op<Result(const c10::List<std::optional<at::Tensor>>&,
                   const c10::List<std::optional<at::Tensor>>&, at::TensorList, at::TensorList,
                   at::TensorList, const at::Tensor&, at::TensorList, c10::ArrayRef<double>,
                   const c10::List<bool>&)>(optimizer, "_backward")
      .call(grad_updates, grad_states, grads, states, params, step, hyperparameters, options,
            output_mask);
}

}  // namespace unrollopt::ops
