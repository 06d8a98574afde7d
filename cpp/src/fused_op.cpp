#include "fused_op.h"

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/_unsafe_view.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/rsub.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/split_with_sizes_copy.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include "unrollopt/unrollopt.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace unrollopt {

at::Tensor operator-(double a, const at::Tensor& b) { return at::rsub(b, a); }
at::Tensor operator/(double a, const at::Tensor& b) {
  return at::scalar_tensor(a, b.options()).div(b);
}

namespace math {
at::Tensor constant(const at::Tensor& like, double v) {
  return at::scalar_tensor(v, like.options());
}
at::Tensor sqrt(const at::Tensor& x) { return x.sqrt(); }
at::Tensor reciprocal(const at::Tensor& x) { return x.reciprocal(); }
at::Tensor square(const at::Tensor& x) { return x.square(); }
at::Tensor pow(const at::Tensor& x, const at::Tensor& y) { return x.pow(y); }
at::Tensor lift(double v) { return at::scalar_tensor(v, at::kDouble); }
at::Tensor if_greater(const at::Tensor& x, double threshold, const at::Tensor& a,
                      const at::Tensor& b) {
  return a.where(x > threshold, b);
}
at::Tensor add(const at::Tensor& a, const at::Tensor& b) { return a + b; }
at::Tensor mul(const at::Tensor& a, const at::Tensor& b) { return a * b; }
at::Tensor zeros_like(const at::Tensor& t) { return at::zeros_like(t); }
at::Tensor where_zero(const at::Tensor& x, double a, const at::Tensor& b) {
  return b.where(x != 0, at::Scalar(a));
}
at::Tensor where_ge(const at::Tensor& a, const at::Tensor& b, const at::Tensor& x) {
  return x.where(a >= b, at::Scalar(0.0));
}
at::Tensor below_normal(const at::Tensor& x) {
  return x < (x.scalar_type() == at::kDouble ? DBL_MIN : FLT_MIN);
}
at::Tensor select(const at::Tensor& mask, const at::Tensor& a, const at::Tensor& b) {
  return a.where(mask, b.to(a.scalar_type()));
}
static double upscale_of(const at::Tensor& like) {
  return like.scalar_type() == at::kDouble ? kUpscale<double> : kUpscale<float>;
}
at::Tensor upscale(const at::Tensor& like, const at::Tensor& x) {
  return x.to(like.scalar_type()) * upscale_of(like);
}
at::Tensor downscale_factor(const at::Tensor& like) {
  return at::scalar_tensor(1 / upscale_of(like), like.options());
}
at::Tensor sign(const at::Tensor& x) { return x.sign().where(x == x, x.detach()); }
at::Tensor fmadd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  return a * b + c;
}
at::Tensor differentiable_root(const at::Tensor& w, const at::Tensor& live, const at::Tensor& tiny,
                               c10::function_ref<at::Tensor()> exact) {
  // Nothing differentiates it: no grad mode, or the root of a value that
  // autograd does not track (a decomposition traced below the Autograd kernel).
  if (!at::GradMode::is_enabled() || !(w.requires_grad() || w._fw_grad(/*level=*/0).defined())) {
    return w.sqrt();
  }
  const at::Tensor is_live = live != 0;
  const double smallest = tiny.scalar_type() == at::kDouble ? DBL_MIN : FLT_MIN;
  // Where the values can be read (checks.h), the common cases in a few passes:
  // nothing tiny where live, and everything live.
  if (readable(w) && readable(live) && readable(tiny) &&
      !((tiny < smallest) & is_live).any().item<bool>()) {
    if (is_live.all().item<bool>()) return w.sqrt();
    return w.where(is_live, 1.0).sqrt().where(is_live, w.detach().sqrt());
  }
  return exact().where(is_live, w.detach().sqrt());
}
}  // namespace math

namespace fused {

namespace {

// Where the fused kernels compute a dtype in.
at::ScalarType compute_type(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

bool concatenates(at::TensorList grads) {
  // Traced: a Python dispatch mode is on (torch.compile's fake and functional
  // modes, also under vmap, whose batched tensors hide what they wrap), or the
  // tensors themselves are fake or functional.
  constexpr int64_t kSmall = int64_t{1} << 14;
  if (grads.size() < 2 || c10::impl::dispatch_mode_enabled()) return false;
  int64_t total = 0;
  for (const at::Tensor& g : grads) {
    if (g.scalar_type() != grads[0].scalar_type() || g.device() != grads[0].device() || traced(g)) {
      return false;
    }
    total += g.numel();
  }
  return total <= kSmall * static_cast<int64_t>(grads.size());
}

}  // namespace

Batches::Batches(at::TensorList like) : like_(like), joined_(concatenates(like)) {}

at::Tensor Batches::in(at::TensorList list, size_t b) const {
  const at::Tensor& first = like_[joined_ ? 0 : b];
  const at::ScalarType compute = compute_type(first.scalar_type());
  if (list.empty()) return at::zeros({}, first.options().dtype(compute));
  const auto entry = [&](size_t i) {
    return list[i].defined() ? list[i] : at::zeros_like(like_[i], compute);
  };
  if (!joined_) return entry(b).to(compute);
  TensorVector flat;
  flat.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) flat.push_back(entry(i).reshape(-1));
  return at::cat(flat).to(compute);
}

void Batches::out(const at::Tensor& result, size_t b, TensorVector& out) const {
  if (!joined_) {
    out.push_back(result.to(like_[b].scalar_type()));
    return;
  }
  std::vector<int64_t> sizes;
  sizes.reserve(like_.size());
  for (const at::Tensor& t : like_) sizes.push_back(t.numel());
  // Not views (results must not be: stop_gradient detaches states in place,
  // which a view refuses); copies, which vmap batches, unlike
  // unsafe_split_with_sizes (and the tensors are small).
  TensorVector split = at::split_with_sizes_copy(result.to(like_[0].scalar_type()), sizes);
  for (size_t i = 0; i < split.size(); ++i) {
    out.push_back(at::_unsafe_view(split[i], like_[i].sizes()));
  }
}

TensorVector contiguous(at::TensorList list) {
  TensorVector out;
  out.reserve(list.size());
  for (const auto& t : list) out.push_back(t.defined() ? t.contiguous() : t);
  return out;
}

TensorVector as_vector(const OptionalTensors& list) {
  TensorVector out;
  out.reserve(list.size());
  for (const std::optional<at::Tensor>& t : list) out.push_back(t.value_or(at::Tensor()));
  return out;
}

TensorVector contiguous(const OptionalTensors& list) { return contiguous(as_vector(list)); }

void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack* /*stack*/) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, op.schema().name(), " on CUDA tensors: this build of unrollopt has no CUDA kernels (",
      UNROLLOPT_NO_CUDA_REASON,
      "). For them, build it again with the CUDA toolkit's bin folder (its nvcc) first on PATH; "
      "in Python, use_accelerated_op=False runs the plain-PyTorch step on any device.");
}

void check_kernels_run(const c10::OperatorHandle& op, const torch::jit::Stack& stack) {
  const auto elsewhere = [](const at::Tensor& t) { return !accelerated_op_available(t.device()); };
  TORCH_CHECK_NOT_IMPLEMENTED(
      !any_argument(op, stack, elsewhere), op.schema().name(),
      ": the fused kernels do not run on a device of its tensors (accelerated_op_available is "
      "false there); in Python, use_accelerated_op=False runs the plain-PyTorch step on any "
      "device.");
}

namespace {

// A fresh large output costs a page fault per 4 KiB page on its first write
// (with glibc, every block above the mmap threshold is fresh). Where the system
// leaves transparent huge pages to madvise (the usual default), asking for them
// on the 2 MiB-aligned interior of the block makes that first write about 5x
// cheaper (bench/: 64 MiB, 22 ms -> 4.4 ms). Memory already touched is
// unaffected. UNROLLOPT_HUGE_PAGES=0 turns this off.
bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("UNROLLOPT_HUGE_PAGES");
    return env == nullptr || std::string_view(env) != "0";
  }();
  return enabled;
}

void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (!t.is_cpu() || t.nbytes() < 2 * kHuge || !huge_pages_enabled()) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  // Advice only: where it is refused, the pages are ordinary ones.
  if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace

TensorVector empty_like_all(at::TensorList list) {
  TensorVector out;
  out.reserve(list.size());
  for (const auto& t : list) {
    out.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
    advise_huge_pages(out.back());
  }
  return out;
}

void copy_back(at::TensorList targets, at::TensorList worked) {
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].is_same(worked[i])) targets[i].copy_(worked[i]);
  }
}

bool any_requires_grad(std::initializer_list<at::TensorList> lists) {
  for (const auto& list : lists) {
    for (const auto& t : list) {
      if (t.defined() && t.requires_grad()) return true;
    }
  }
  return false;
}

}  // namespace fused
}  // namespace unrollopt
