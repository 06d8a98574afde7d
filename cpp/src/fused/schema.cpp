#include "schema.h"

#include <algorithm>
#include <string_view>

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/StringUtil.h>

namespace unrollopt::fused {

std::vector<std::string> schemas(const std::string& name, const ops::OperatorDescription& d,
                                 const char* scalar) {
  const auto is_flag = [&](const std::string& o) {
    return std::find(d.flags.begin(), d.flags.end(), o) != d.flags.end();
  };
  // ", Tensor[] mu, Tensor[] nu" with a prefix, a suffix or alias sets per list.
  const auto lists = [&](std::string_view type, const char* prefix, const char* suffix,
                         char alias = 0) {
    std::string out;
    for (const auto& s : d.states) {
      std::string t(type);
      if (alias) t.insert(t.size() - 2, std::string("(") + alias++ + "!)");
      out += ", " + t + " " + prefix + s + suffix;
    }
    return out;
  };
  std::string scalars = ", Tensor step";
  for (const auto& h : d.hyperparameters) scalars += ", Tensor " + h;
  for (const auto& o : d.options) scalars += (is_flag(o) ? ", bool " : ", float ") + o;
  std::string grad_hyper;
  for (const auto& h : d.hyperparameters) grad_hyper += ", Tensor grad_" + h;
  const std::string step = "(Tensor[] grads" + lists("Tensor[]", "", "") + ", Tensor[] params" +
                           scalars + ") -> (Tensor[] updates" + lists("Tensor[]", "", "_out") + ")";
  std::vector<std::string> out{
      name + step, name + "_plain" + step,
      name + "_(Tensor(a!)[] params, Tensor(b!)[] grads" + lists("Tensor[]", "", "", 'c') +
          scalars + ", bool update_params) -> ()",
      name + "_backward(Tensor?[] grad_updates" + lists("Tensor?[]", "grad_", "_out") +
          ", Tensor[] grads" + lists("Tensor[]", "", "") + ", Tensor[] params" + scalars +
          ", bool[] output_mask) -> (Tensor[] grad_grads" + lists("Tensor[]", "grad_", "") +
          ", Tensor[] grad_params" + grad_hyper + ")"};
  if (scalar) out.push_back(name + "_next_" + scalar + "(" + scalars.substr(2) + ") -> Tensor");
  return out;
}

namespace {
// "unrollopt.adam" for unrollopt::adam, in errors.
std::string label(const c10::OperatorHandle& op) {
  std::string name = op.schema().name();
  return name.replace(name.find("::"), 2, ".");
}
bool is_list_of_tensors(const c10::Argument& a) {
  const auto list = a.type()->cast<c10::ListType>();
  return list && list->getElementType()->kind() == c10::TypeKind::TensorType;
}
}  // namespace

ops::OperatorDescription describe(const c10::FunctionSchema& schema) {
  ops::OperatorDescription d;
  for (const auto& a : schema.arguments()) {
    const auto kind = a.type()->kind();
    if (is_list_of_tensors(a) && a.name() != "grads" && a.name() != "params") {
      d.states.push_back(a.name());
    } else if (kind == c10::TypeKind::TensorType && a.name() != "step") {
      d.hyperparameters.push_back(a.name());
    } else if ((kind == c10::TypeKind::FloatType || kind == c10::TypeKind::BoolType) &&
               a.name() != "update_params") {
      d.options.push_back(a.name());
      if (kind == c10::TypeKind::BoolType) d.flags.push_back(a.name());
    }
  }
  return d;
}

// --- the stack, in a kernel ---------------------------------------------------

namespace {
// Moves the lists of `from` into one.
TensorVector concatenated(c10::ArrayRef<c10::IValue> from) {
  TensorVector out;
  for (const auto& v : from) {
    for (const at::Tensor& t : v.toTensorList()) out.push_back(t);
  }
  return out;
}
OptionalTensors concatenated_optional(c10::ArrayRef<c10::IValue> from) {
  OptionalTensors out;
  for (const auto& v : from) {
    for (const std::optional<at::Tensor>& t : v.toOptionalTensorList()) out.push_back(t);
  }
  return out;
}

// Reads step, hyperparameters and options, from `at` on.
size_t pop_scalars(c10::ArrayRef<c10::IValue> in, size_t at, Counts c, StepArguments& a) {
  a.step = in[at++].toTensor();
  for (size_t i = 0; i < c.hyper; ++i) a.hyper.push_back(in[at++].toTensor());
  for (size_t i = 0; i < c.options; ++i, ++at) {
    a.options.push_back(in[at].isBool() ? double(in[at].toBool()) : in[at].toDouble());
  }
  return at;
}

// Each of the `count` lists from argument `first` on holds n entries (the
// kernels check the lists as a whole; here each is named).
void check_sizes(const c10::OperatorHandle& op, c10::ArrayRef<c10::IValue> in, size_t first,
                 size_t count, size_t n) {
  for (size_t k = first; k < first + count; ++k) {
    const bool tensors = in[k].isTensorList();
    const size_t size = tensors ? in[k].toTensorList().size() : in[k].toList().size();
    TORCH_CHECK_VALUE(size == n, label(op), ": ", op.schema().arguments()[k].name(), " has ", size,
                      tensors ? " tensors" : " entries", " but grads has ", n);
  }
}

void push_split(torch::jit::Stack& stack, TensorVector&& flat, size_t lists, size_t n,
                const std::vector<bool>* wanted = nullptr) {
  for (size_t k = 0; k < lists; ++k) {
    if (flat.empty() || (wanted && !(*wanted)[k])) {
      stack.emplace_back(TensorVector{});
    } else {
      stack.emplace_back(TensorVector(std::make_move_iterator(flat.begin() + k * n),
                                      std::make_move_iterator(flat.begin() + (k + 1) * n)));
    }
  }
}
}  // namespace

StepArguments read_forward(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                           Counts c) {
  const size_t size = 1 + c.states + 2 + c.hyper + c.options;  // grads, states, params, step, ...
  const auto in = torch::jit::last(stack, size);
  StepArguments a;
  a.grads = in[0].toTensorVector();
  check_sizes(op, in, 1, c.states, a.grads.size());
  a.states = concatenated(in.slice(1, c.states));
  a.params = in[1 + c.states].toTensorVector();
  pop_scalars(in, 2 + c.states, c, a);
  return a;
}

InplaceArguments read_inplace(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                              Counts c) {
  const size_t size = 2 + c.states + 1 + c.hyper + c.options + 1;
  const auto in = torch::jit::last(stack, size);
  InplaceArguments a;
  a.params = in[0].toTensorVector();
  a.grads = in[1].toTensorVector();
  check_sizes(op, in, 2, c.states, a.grads.size());
  a.states = concatenated(in.slice(2, c.states));
  a.update_params = in[pop_scalars(in, 2 + c.states, c, a)].toBool();
  return a;
}

BackwardArguments read_backward(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                                Counts c) {
  const size_t size = (1 + c.states) + (2 + c.states) + 1 + c.hyper + c.options + 1;
  const auto in = torch::jit::last(stack, size);
  BackwardArguments a;
  const size_t g = 1 + c.states;
  a.grads = in[g].toTensorVector();
  check_sizes(op, in, 0, 1 + c.states, a.grads.size());
  check_sizes(op, in, g + 1, c.states, a.grads.size());
  a.grad_updates = in[0].toOptionalTensorList();
  a.grad_states = concatenated_optional(in.slice(1, c.states));
  a.states = concatenated(in.slice(g + 1, c.states));
  a.params = in[g + 1 + c.states].toTensorVector();
  const c10::List<bool> mask = in[pop_scalars(in, g + 2 + c.states, c, a)].toBoolList();
  const size_t outputs = 2 + c.states + c.hyper;
  TORCH_CHECK_VALUE(mask.size() == outputs, label(op), ": output_mask must hold ", outputs,
                    " values, one per output (grads, each state, params, each "
                    "hyperparameter), got ",
                    mask.size());
  a.wanted.assign(mask.begin(), mask.end());
  bool states = false;
  for (size_t k = 0; k < c.states; ++k) states = states || a.wanted[1 + k];
  a.mask = {a.wanted[0], states, a.wanted[1 + c.states]};
  for (size_t i = 0; i < c.hyper; ++i) a.mask.push_back(a.wanted[2 + c.states + i]);
  return a;
}

StepArguments read_scalars(const torch::jit::Stack& stack, Counts c) {
  StepArguments a;
  pop_scalars(torch::jit::last(stack, 1 + c.hyper + c.options), 0, c, a);
  return a;
}

bool any_argument(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                  bool (*predicate)(const at::Tensor&)) {
  for (const c10::IValue& v : torch::jit::last(stack, op.schema().arguments().size())) {
    if (v.isTensor()) {
      if (predicate(v.toTensor())) return true;
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorList()) {
        if (t.defined() && predicate(t)) return true;
      }
    } else if (v.isList()) {  // Tensor?[] (and bool[]: no tensors)
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor() && predicate(e.toTensor())) return true;
      }
    }
  }
  return false;
}

void drop_arguments(const c10::OperatorHandle& op, torch::jit::Stack& stack) {
  torch::jit::drop(stack, op.schema().arguments().size());
}

void redispatch_below_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                               torch::jit::Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

void push_forward(torch::jit::Stack& stack, ForwardResult result, size_t num_states) {
  auto& [updates, states] = result;
  const size_t n = updates.size();
  stack.emplace_back(std::move(updates));
  push_split(stack, std::move(states), num_states, n);
}

void push_backward(torch::jit::Stack& stack, BackwardResult result, size_t num_states,
                   const std::vector<bool>& wanted) {
  auto& [grad_g, grad_s, grad_p, grad_h] = result;
  const size_t n = grad_s.size() / std::max<size_t>(num_states, 1);
  stack.emplace_back(std::move(grad_g));
  const std::vector<bool> wanted_states(wanted.begin() + 1, wanted.begin() + 1 + num_states);
  push_split(stack, std::move(grad_s), num_states, n, &wanted_states);
  stack.emplace_back(std::move(grad_p));
  for (auto& h : grad_h) stack.emplace_back(std::move(h));
}

// --- calls from C++, with the lists -------------------------------------------

namespace {
void push_lists(torch::jit::Stack& stack, at::TensorList flat, size_t lists, size_t n) {
  for (size_t k = 0; k < lists; ++k) stack.emplace_back(flat.slice(k * n, n).vec());
}
void push_optional_lists(torch::jit::Stack& stack, const OptionalTensors& flat, size_t lists,
                         size_t n) {
  for (size_t k = 0; k < lists; ++k) {
    OptionalTensors list;
    for (size_t i = k * n; i < (k + 1) * n && i < flat.size(); ++i) list.push_back(flat[i]);
    stack.emplace_back(std::move(list));
  }
}
void push_scalars(torch::jit::Stack& stack, const c10::OperatorHandle& op,
                  const ops::OperatorDescription& d, const at::Tensor& step, at::TensorList hyper,
                  c10::ArrayRef<double> options) {
  TORCH_CHECK_VALUE(hyper.size() == d.hyperparameters.size(), label(op), ": expected ",
                    d.hyperparameters.size(), " hyperparameters (",
                    c10::Join(", ", d.hyperparameters), "), got ", hyper.size());
  TORCH_CHECK_VALUE(options.size() == d.options.size(), label(op), ": options must hold ",
                    d.options.size(), " values (", c10::Join(", ", d.options), "), got ",
                    options.size());
  stack.emplace_back(step);
  for (const auto& h : hyper) stack.emplace_back(h);
  for (size_t i = 0; i < options.size(); ++i) {
    const bool flag = std::find(d.flags.begin(), d.flags.end(), d.options[i]) != d.flags.end();
    if (flag) {
      stack.emplace_back(options[i] != 0);
    } else {
      stack.emplace_back(options[i]);
    }
  }
}
// The number of tensors per state list, checked.
size_t per_list(const c10::OperatorHandle& op, const ops::OperatorDescription& d, size_t states,
                size_t n) {
  TORCH_CHECK_VALUE(states == d.states.size() * n, label(op), ": states has ", states,
                    " tensors; expected ", d.states.size(), " per grad (",
                    c10::Join(", ", d.states), ")");
  return n;
}
}  // namespace

ForwardResult call_forward(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                           at::TensorList grads, at::TensorList states, at::TensorList params,
                           const at::Tensor& step, at::TensorList hyper,
                           c10::ArrayRef<double> options) {
  const size_t n = per_list(op, d, states.size(), grads.size());
  torch::jit::Stack stack;
  stack.reserve(4 + d.states.size() + hyper.size() + options.size());
  stack.emplace_back(grads.vec());
  push_lists(stack, states, d.states.size(), n);
  stack.emplace_back(params.vec());
  push_scalars(stack, op, d, step, hyper, options);
  op.callBoxed(stack);
  ForwardResult out;
  std::get<0>(out) = stack[0].toTensorVector();
  std::get<1>(out) = concatenated(c10::ArrayRef<c10::IValue>(stack).slice(1));
  return out;
}

at::Tensor call_next_scalar(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                            const at::Tensor& step, at::TensorList hyper,
                            c10::ArrayRef<double> options) {
  torch::jit::Stack stack;
  push_scalars(stack, op, d, step, hyper, options);
  op.callBoxed(stack);
  return stack[0].toTensor();
}

void call_inplace(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                  at::TensorList params, at::TensorList grads, at::TensorList states,
                  const at::Tensor& step, at::TensorList hyper, c10::ArrayRef<double> options,
                  bool update_params) {
  const size_t n = per_list(op, d, states.size(), grads.size());
  torch::jit::Stack stack;
  stack.reserve(5 + d.states.size() + hyper.size() + options.size());
  stack.emplace_back(params.vec());
  stack.emplace_back(grads.vec());
  push_lists(stack, states, d.states.size(), n);
  push_scalars(stack, op, d, step, hyper, options);
  stack.emplace_back(update_params);
  op.callBoxed(stack);
}

BackwardResult call_backward(const c10::OperatorHandle& op, const ops::OperatorDescription& d,
                             const OptionalTensors& grad_updates,
                             const OptionalTensors& grad_states, at::TensorList grads,
                             at::TensorList states, at::TensorList params, const at::Tensor& step,
                             at::TensorList hyper, c10::ArrayRef<double> options,
                             const c10::List<bool>& mask) {
  const size_t ns = d.states.size(), nh = hyper.size();
  const size_t n = per_list(op, d, states.size(), grads.size());
  TORCH_CHECK_VALUE(mask.size() == 3 + nh, label(op), ": output_mask must hold ", 3 + nh,
                    " values, got ", mask.size());
  torch::jit::Stack stack;
  stack.reserve(7 + 2 * ns + nh + options.size());
  stack.emplace_back(grad_updates);
  push_optional_lists(stack, grad_states, ns, n);
  stack.emplace_back(grads.vec());
  push_lists(stack, states, ns, n);
  stack.emplace_back(params.vec());
  push_scalars(stack, op, d, step, hyper, options);
  c10::List<bool> wanted{mask[0]};
  for (size_t k = 0; k < ns; ++k) wanted.push_back(mask[1]);
  wanted.push_back(mask[2]);
  for (size_t i = 0; i < nh; ++i) wanted.push_back(mask[3 + i]);
  stack.emplace_back(std::move(wanted));
  op.callBoxed(stack);
  const c10::ArrayRef<c10::IValue> out(stack);
  BackwardResult r;
  std::get<0>(r) = out[0].toTensorVector();
  std::get<1>(r) = concatenated(out.slice(1, ns));
  std::get<2>(r) = out[1 + ns].toTensorVector();
  for (const auto& h : out.slice(2 + ns, nh)) std::get<3>(r).push_back(h.toTensor());
  return r;
}

}  // namespace unrollopt::fused
