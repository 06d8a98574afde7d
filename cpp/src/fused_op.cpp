#include "fused_op.h"

namespace unrollopt {

namespace math {
at::Tensor constant(const at::Tensor& like, double v) {
  return at::scalar_tensor(v, like.options());
}
at::Tensor sqrt(const at::Tensor& x) { return x.sqrt(); }
at::Tensor reciprocal(const at::Tensor& x) { return x.reciprocal(); }
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
at::Tensor sign(const at::Tensor& x) { return x.sign(); }
at::Tensor fmadd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  return a * b + c;
}
}  // namespace math

namespace fused {

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

TensorVector empty_like_all(at::TensorList list) {
  TensorVector out;
  out.reserve(list.size());
  for (const auto& t : list) out.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  return out;
}

void copy_back(at::TensorList targets, at::TensorList worked) {
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].is_same(worked[i])) targets[i].copy_(worked[i]);
  }
}

bool any_requires_grad(std::initializer_list<at::TensorList> lists,
                       std::initializer_list<const OptionalTensors*> optional_lists) {
  for (const auto& list : lists) {
    for (const auto& t : list) {
      if (t.defined() && t.requires_grad()) return true;
    }
  }
  for (const auto* list : optional_lists) {
    for (const std::optional<at::Tensor>& t : *list) {
      if (t.has_value() && t->defined() && t->requires_grad()) return true;
    }
  }
  return false;
}

}  // namespace fused
}  // namespace unrollopt
