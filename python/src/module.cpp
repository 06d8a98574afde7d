// unrollopt._C: what Python needs from C++ beyond the operators (which load with
// this module and are called as torch.ops.unrollopt.*): build information, the
// availability probe, and the checks shared with the C++ API.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>
#include <torch/csrc/autograd/python_variable.h>

#include "checks.h"      // cpp/src: the operators' input checks
#include "functional.h"  // cpp/src: the settings' ranges
#include "unrollopt/unrollopt.h"

namespace nb = nanobind;

// torch.Tensor <-> at::Tensor by reference, keeping requires_grad and grad_fn
// (nanobind's DLPack-based ndarray refuses tensors that require grad).
namespace nanobind::detail {
template <>
struct type_caster<at::Tensor> {
  NB_TYPE_CASTER(at::Tensor, const_name("torch.Tensor"))

  bool from_python(handle src, uint8_t, cleanup_list*) noexcept {
    if (!THPVariable_Check(src.ptr())) return false;
    value = THPVariable_Unpack(src.ptr());
    return true;
  }
  static handle from_cpp(const at::Tensor& t, rv_policy, cleanup_list*) noexcept {
    return THPVariable_Wrap(t);
  }
};
}  // namespace nanobind::detail

namespace {
using TensorVector = std::vector<at::Tensor>;
}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "unrollopt's compiled core.";
  // c10's ValueError and TypeError keep their Python types, as in torch.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
  m.def("version", &unrollopt::version, "The C++ library's version.");
  m.def(
      "describe",
      [](const std::string& op) {
        const auto& d = unrollopt::ops::describe(op);
        return std::make_tuple(d.states, d.hyperparameters, d.options, d.flags);
      },
      nb::arg("op"),
      "(states, hyperparameters, options, flags): the names of the operator's arguments, in its "
      "order, read from its schema; flags are the options of type bool. ValueError for an "
      "unknown name.");
  m.def("operator_names", &unrollopt::ops::operator_names, "Every operator's name, sorted.");
  m.def("default_settings", &unrollopt::default_settings,
        "The C++ optimizers' settings at their defaults: [(name, [(setting, value)])].");
  m.def(
      "declarations",
      [] {
        std::vector<std::tuple<std::string, std::string, std::vector<std::string>,
                               std::vector<std::tuple<std::string, std::string, bool>>,
                               std::vector<std::pair<std::string, std::string>>,
                               std::optional<std::pair<std::string, double>>,
                               std::vector<std::pair<std::string, std::string>>>>
            out;
        for (auto& d : unrollopt::declarations()) {
          out.emplace_back(d.name, d.op, d.variants, d.requirements, d.initial_states,
                           d.scalar_state, d.setting_kinds);
        }
        return out;
      },
      "Each C++ optimizer's choices as data: (name, rule or family, variants, requirements "
      "(flag, setting, must be on), initial states (state, setting), the rule's scalar state "
      "((name, initial) or None), each setting's kind ((setting, \"hyperparameter\" | \"number\" | "
      "\"flag\")); see Declaration in "
      "unrollopt/optimizers.h.");
  m.def(
      "check_setting",
      [](const std::string& name, double value, const std::string& range) {
        unrollopt::detail::check_setting("", name, value, range);
      },
      nb::arg("name"), nb::arg("value"), nb::arg("range") = "",
      "ValueError unless an optimizer setting is in its range (that of `range`, default `name`): "
      "the C++ optimizers' own check and message.");
  m.def(
      "bounded_settings",
      [] {
        std::vector<std::tuple<std::string, double, double, bool>> out;
        for (const auto& [name, r] : unrollopt::detail::bounded_settings()) {
          out.emplace_back(name, r.low, r.high, r.high_open);
        }
        return out;
      },
      "(name, low, high, high_open) of the C++ optimizers' settings whose range is not [0, inf], "
      "by check_setting's rule (beta1, beta2, ... in [0, 1), alpha and rho in [0, 1]).");
  m.def(
      "accelerated_op_available",
      [](const std::string& device) {
        return unrollopt::accelerated_op_available(c10::Device(device));
      },
      nb::arg("device"), "Whether the fused operators can run on this device (a string).");

  m.def(
      "check_parameter_lists",
      [](const std::string& op, const TensorVector& grads,
         const std::vector<std::pair<std::string, TensorVector>>& states,
         const TensorVector& params) {
        std::vector<unrollopt::NamedTensorList> named;
        for (const auto& [name, list] : states) named.emplace_back(name.c_str(), list);
        unrollopt::check_parameter_lists(op.c_str(), grads, named, params);
      },
      nb::arg("op"), nb::arg("grads"), nb::arg("states"), nb::arg("params"),
      "The fused operators' input checks, shared by the plain-PyTorch path. `states` is a "
      "list of (name, tensors) pairs.");
  m.def(
      "check_writable",
      [](const std::string& op, const std::string& name, const TensorVector& tensors) {
        unrollopt::check_writable(op.c_str(), name.c_str(), tensors);
      },
      nb::arg("op"), nb::arg("name"), nb::arg("tensors"),
      "Raises ValueError if a tensor cannot be written in place (overlapping memory).");
  m.def(
      "check_no_aliasing",
      [](const std::string& op, const std::vector<std::pair<std::string, TensorVector>>& written,
         const std::vector<std::pair<std::string, TensorVector>>& read) {
        std::vector<unrollopt::NamedTensorList> w, r;
        for (const auto& [name, list] : written) w.emplace_back(name.c_str(), list);
        for (const auto& [name, list] : read) r.emplace_back(name.c_str(), list);
        unrollopt::check_no_aliasing(op.c_str(), w, r);
      },
      nb::arg("op"), nb::arg("written"), nb::arg("read"),
      "Raises ValueError, naming both, if a tensor an in-place step writes shares memory with "
      "another of its arguments. Both are lists of (name, tensors) pairs.");
}
