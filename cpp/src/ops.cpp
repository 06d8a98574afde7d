// The C++ entry points of the operators: calls through the dispatcher, so that
// C++ callers get the same Autograd, CPU and Meta kernels as Python.

#include "unrollopt/ops.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/StringUtil.h>

#include "fused/schema.h"

namespace unrollopt::ops {

std::vector<std::string> operator_names() {
  // An operator is NAME where NAME_backward exists too.
  std::vector<std::string> names;
  auto& dispatcher = c10::Dispatcher::singleton();
  for (const auto& op : dispatcher.getAllOpNames()) {
    constexpr std::string_view prefix = "unrollopt::";
    if (op.name.rfind(prefix, 0) != 0 || !op.overload_name.empty()) continue;
    if (dispatcher.findSchema({op.name + "_backward", ""}).has_value()) {
      names.push_back(op.name.substr(prefix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {
struct Operator {
  c10::OperatorHandle forward, plain, inplace, backward;
  OperatorDescription description;
  std::optional<c10::OperatorHandle> next_scalar;  // NAME_next_S, for a rule with one
};

// unrollopt::NAME's operators, looked up once.
const Operator& find(std::string_view optimizer) {
  static std::mutex mutex;
  static std::map<std::string, Operator, std::less<>> found;
  std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = found.find(optimizer); it != found.end()) return it->second;
  auto& dispatcher = c10::Dispatcher::singleton();
  const std::string name = "unrollopt::" + std::string(optimizer);
  const auto forward = dispatcher.findSchema({name, ""});
  const auto plain = dispatcher.findSchema({name + "_plain", ""});
  const auto inplace = dispatcher.findSchema({name + "_", ""});
  const auto backward = dispatcher.findSchema({name + "_backward", ""});
  TORCH_CHECK_VALUE(forward && plain && inplace && backward,
                    "unrollopt::ops: no optimizer named \"", optimizer,
                    "\"; the operators are: ", c10::Join(", ", operator_names()));
  std::optional<c10::OperatorHandle> next_scalar;
  for (const auto& op : dispatcher.getAllOpNames()) {
    if (op.name.rfind(name + "_next_", 0) == 0) next_scalar = dispatcher.findSchema(op);
  }
  // std::map's elements stay where they are: the reference outlives the lock.
  return found
      .emplace(std::string(optimizer), Operator{*forward, *plain, *inplace, *backward,
                                                fused::describe(forward->schema()), next_scalar})
      .first->second;
}
}  // namespace

const OperatorDescription& describe(std::string_view optimizer) {
  return find(optimizer).description;
}

// NAME and NAME_plain take the same arguments.
#define UNROLLOPT_OUT_OF_PLACE_STEP(function, handle)                                  \
  std::tuple<TensorVector, TensorVector> function(                                     \
      std::string_view optimizer, at::TensorList grads, at::TensorList states,         \
      at::TensorList params, const at::Tensor& step, at::TensorList hyperparameters,   \
      c10::ArrayRef<double> options) {                                                 \
    const Operator& op = find(optimizer);                                              \
    return fused::call_forward(op.handle, op.description, grads, states, params, step, \
                               hyperparameters, options);                              \
  }
UNROLLOPT_OUT_OF_PLACE_STEP(fused_step, forward)
UNROLLOPT_OUT_OF_PLACE_STEP(plain_step, plain)
#undef UNROLLOPT_OUT_OF_PLACE_STEP

at::Tensor next_scalar(std::string_view optimizer, const at::Tensor& step,
                       at::TensorList hyperparameters, c10::ArrayRef<double> options) {
  const Operator& op = find(optimizer);
  TORCH_CHECK_VALUE(op.next_scalar, "unrollopt::ops::next_scalar: the rule ", optimizer,
                    " keeps no scalar state");
  return fused::call_next_scalar(*op.next_scalar, op.description, step, hyperparameters, options);
}

void fused_step_(std::string_view optimizer, at::TensorList params, at::TensorList grads,
                 at::TensorList states, const at::Tensor& step, at::TensorList hyperparameters,
                 c10::ArrayRef<double> options, bool update_params) {
  const Operator& op = find(optimizer);
  fused::call_inplace(op.inplace, op.description, params, grads, states, step, hyperparameters,
                      options, update_params);
}

std::tuple<TensorVector, TensorVector, TensorVector, TensorVector> fused_step_backward(
    std::string_view optimizer, const c10::List<std::optional<at::Tensor>>& grad_updates,
    const c10::List<std::optional<at::Tensor>>& grad_states, at::TensorList grads,
    at::TensorList states, at::TensorList params, const at::Tensor& step,
    at::TensorList hyperparameters, c10::ArrayRef<double> options,
    const c10::List<bool>& output_mask) {
  const Operator& op = find(optimizer);
  return fused::call_backward(op.backward, op.description, grad_updates, grad_states, grads, states,
                              params, step, hyperparameters, options, output_mask);
}

}  // namespace unrollopt::ops
