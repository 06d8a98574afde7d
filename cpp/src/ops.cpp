// The C++ entry points of the operators: typed calls through the dispatcher, so
// that C++ callers get the same Autograd, CPU and Meta kernels as Python.

#include "unrollopt/ops.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/StringUtil.h>

namespace unrollopt::ops {
namespace {
std::map<std::string, OperatorDescription, std::less<>>& descriptions() {
  static std::map<std::string, OperatorDescription, std::less<>> all;
  return all;
}

std::string known_optimizers() { return c10::Join(", ", operator_names()); }
}  // namespace

void describe_operator(std::string name, OperatorDescription description) {
  descriptions().insert_or_assign(std::move(name), std::move(description));
}

std::vector<std::string> operator_names() {
  std::vector<std::string> names;
  for (const auto& [name, _] : descriptions()) names.push_back(name);
  return names;  // sorted: the map's order
}

const OperatorDescription& describe(std::string_view optimizer) {
  const auto it = descriptions().find(optimizer);
  TORCH_CHECK_VALUE(it != descriptions().end(), "unrollopt::ops: no optimizer named \"", optimizer,
                    "\"; the operators are: ", known_optimizers());
  return it->second;
}

namespace {
template <class Signature>
c10::TypedOperatorHandle<Signature> op(std::string_view optimizer, const char* suffix) {
  const std::string name = "unrollopt::" + std::string(optimizer) + suffix;
  const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
  TORCH_CHECK_VALUE(handle.has_value(), "unrollopt::ops: no optimizer named \"", optimizer,
                    "\"; the operators are: ", known_optimizers());
  return handle->typed<Signature>();
}
}  // namespace

std::tuple<TensorVector, TensorVector> fused_step(std::string_view optimizer, at::TensorList grads,
                                                  at::TensorList states, at::TensorList params,
                                                  const at::Tensor& step,
                                                  at::TensorList hyperparameters,
                                                  c10::ArrayRef<double> options) {
  return op<std::tuple<TensorVector, TensorVector>(at::TensorList, at::TensorList, at::TensorList,
                                                   const at::Tensor&, at::TensorList,
                                                   c10::ArrayRef<double>)>(optimizer, "")
      .call(grads, states, params, step, hyperparameters, options);
}

void fused_step_(std::string_view optimizer, at::TensorList params, at::TensorList grads,
                 at::TensorList states, const at::Tensor& step, at::TensorList hyperparameters,
                 c10::ArrayRef<double> options, bool update_params) {
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
