#include "checks.h"

#include <string_view>

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

namespace unrollopt {
namespace {
bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}
}  // namespace

void check_like(const char* op, const char* name, size_t i, const at::Tensor& t,
                const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.defined(), "unrollopt.", op, ": ", name, "[", i, "] is undefined");
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "unrollopt.", op, ": ", name, "[", i,
                   "] has dtype ", t.scalar_type(), " but grads[", i, "] has dtype ",
                   ref.scalar_type());
  TORCH_CHECK_VALUE(t.sym_sizes() == ref.sym_sizes(), "unrollopt.", op, ": ", name, "[", i,
                    "] has shape ", t.sym_sizes(), " but grads[", i, "] has shape ",
                    ref.sym_sizes());
  TORCH_CHECK_VALUE(t.device() == ref.device(), "unrollopt.", op, ": ", name, "[", i,
                    "] is on ", t.device(), " but grads[", i, "] is on ", ref.device());
}

void check_parameter_lists(const char* op, at::TensorList grads,
                           c10::ArrayRef<NamedTensorList> states, at::TensorList params) {
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    TORCH_CHECK_VALUE(g.defined(), "unrollopt.", op, ": grads[", i, "] is undefined");
    TORCH_CHECK_TYPE(supported_dtype(g.scalar_type()), "unrollopt.", op, ": grads[", i,
                     "] has dtype ", g.scalar_type(),
                     "; expected float16, bfloat16, float32 or float64");
    TORCH_CHECK_VALUE(g.device() == grads[0].device(), "unrollopt.", op,
                      ": all tensors must be on one device, but grads[0] is on ",
                      grads[0].device(), " and grads[", i, "] on ", g.device());
  }
  for (const auto& [name, list] : states) {
    TORCH_CHECK_VALUE(list.size() == grads.size(), "unrollopt.", op, ": ", name, " has ",
                      list.size(), " tensors but grads has ", grads.size());
    for (size_t i = 0; i < list.size(); ++i) check_like(op, name, i, list[i], grads[i]);
  }
  TORCH_CHECK_VALUE(params.empty() || params.size() == grads.size(), "unrollopt.", op,
                    ": params has ", params.size(), " tensors but grads has ", grads.size(),
                    " (pass one per grad, or none)");
  for (size_t i = 0; i < params.size(); ++i) check_like(op, "params", i, params[i], grads[i]);
}

void check_writable(const char* op, const char* name, at::TensorList list) {
  for (size_t i = 0; i < list.size(); ++i) {
    TORCH_CHECK_VALUE(at::has_internal_overlap(list[i]) != at::MemOverlap::Yes, "unrollopt.", op,
                      ": ", name, "[", i,
                      "] cannot be written in place: some of its elements share memory (e.g. "
                      "an expanded tensor). Pass a tensor with its own storage (.clone()), or "
                      "update out of place.");
  }
}

void check_hyperparameter(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), "unrollopt.", op, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.dim() == 0, "unrollopt.", op, ": ", name,
                    " must be a 0-d tensor, got shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()) ||
                       (std::string_view(name) == "step" && at::isIntegralType(t.scalar_type(), false)),
                   "unrollopt.", op, ": ", name, " must be a floating-point tensor, got ",
                   t.scalar_type());
}

}  // namespace unrollopt
