#include "checks.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/MemoryOverlap.h>
#include <ATen/ops/zeros.h>
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
  TORCH_CHECK_VALUE(t.device() == ref.device(), "unrollopt.", op, ": ", name, "[", i, "] is on ",
                    t.device(), " but grads[", i, "] is on ", ref.device());
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
                      ": all tensors must be on one device, but grads[0] is on ", grads[0].device(),
                      " and grads[", i, "] on ", g.device());
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

namespace {
// A tensor's place in memory: the bytes from its first to one past its last element.
struct Extent {
  uintptr_t begin, end;
  const NamedTensorList* list;
  size_t index;
  bool written;
};

std::string describe(const Extent& e) {
  return std::string(e.list->first) + "[" + std::to_string(e.index) + "]";
}

// Whether two tensors on one storage have a byte in common, where
// at::get_overlap_status cannot tell (interleaved strided views): their bytes
// marked in a mask of the storage. Rare, so its cost (the storage's size) is fine.
bool share_a_byte(const at::Tensor& a, const at::Tensor& b) {
  if (!a.storage().is_alias_of(b.storage())) return false;
  const at::Tensor mask =
      at::zeros({static_cast<int64_t>(a.storage().nbytes())}, a.options().dtype(at::kByte));
  const auto bytes_of = [&](const at::Tensor& t) {
    const int64_t k = t.itemsize();
    std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end()), strides;
    for (int64_t s : t.strides()) strides.push_back(s * k);
    sizes.push_back(k);
    strides.push_back(1);
    return mask.as_strided(sizes, strides, t.storage_offset() * k);
  };
  bytes_of(a).fill_(1);
  return bytes_of(b).any().item<bool>();
}
}  // namespace

void check_no_aliasing(const char* op, c10::ArrayRef<NamedTensorList> written,
                       c10::ArrayRef<NamedTensorList> read) {
  std::vector<Extent> extents;
  for (bool is_written : {true, false}) {
    for (const NamedTensorList& list : is_written ? written : read) {
      for (size_t i = 0; i < list.second.size(); ++i) {
        const at::Tensor& t = list.second[i];
        // Tensors without memory (meta, symbolic shapes as torch.compile traces) have nothing to
        // alias.
        if (!t.defined() || t.is_meta() || t.unsafeGetTensorImpl()->has_symbolic_sizes_strides() ||
            !t.has_storage() || t.numel() == 0) {
          continue;
        }
        int64_t last = 0;  // offset of the last element, in elements
        for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * std::abs(t.stride(d));
        const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
        extents.push_back({begin, begin + (static_cast<uintptr_t>(last) + 1) * t.itemsize(), &list,
                           i, is_written});
      }
    }
  }
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  // A sweep over the sorted extents, checking each against those still open.
  std::vector<const Extent*> open;
  for (const Extent& e : extents) {
    open.erase(std::remove_if(open.begin(), open.end(),
                              [&](const Extent* o) { return o->end <= e.begin; }),
               open.end());
    for (const Extent* o : open) {
      if (!o->written && !e.written) continue;
      const at::Tensor& a = o->list->second[o->index];
      const at::Tensor& b = e.list->second[e.index];
      const bool overlap = a.device() == b.device() && [&] {
        const at::MemOverlapStatus status = at::get_overlap_status(a, b);
        if (status == at::MemOverlapStatus::TooHard) return share_a_byte(a, b);
        return status != at::MemOverlapStatus::No;
      }();
      TORCH_CHECK_VALUE(!overlap, "unrollopt.", op, ": ", describe(*o), " and ", describe(e),
                        " share memory, and an in-place step writes ",
                        o->written ? describe(*o) : describe(e),
                        ": its result would depend on the order of the writes. Pass tensors "
                        "with their own storage (.clone() one of them).");
    }
    open.push_back(&e);
  }
}

bool traced(const at::Tensor& t) {
  constexpr c10::DispatchKeySet keys({c10::DispatchKey::Functionalize, c10::DispatchKey::Python});
  return t.key_set().has_any(keys);
}

bool readable(const at::Tensor& t) {
  constexpr c10::DispatchKeySet functorch(
      {c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper});
  return t.defined() && t.is_cpu() && !t.key_set().has_any(functorch) && !traced(t);
}

void check_step(const char* op, const at::Tensor& step) {
  if (!readable(step)) return;
  const double value = step.item<double>();
  TORCH_CHECK_VALUE(value >= 1, "unrollopt.", op,
                    ": step must be >= 1 (the step number after incrementing: 1 on the first "
                    "step), got ",
                    value);
}

void check_hyperparameter(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), "unrollopt.", op, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.dim() == 0, "unrollopt.", op, ": ", name, " must be a 0-d tensor, got shape ",
                    t.sizes());
  TORCH_CHECK_TYPE(
      at::isFloatingType(t.scalar_type()) ||
          (std::string_view(name) == "step" && at::isIntegralType(t.scalar_type(), false)),
      "unrollopt.", op, ": ", name, " must be a floating-point tensor, got ", t.scalar_type());
}

}  // namespace unrollopt
