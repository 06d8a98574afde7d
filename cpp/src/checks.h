#pragma once
// Input checks shared by every operator's kernels. They raise c10::TypeError
// (TypeError in Python) for a wrong dtype and c10::ValueError (ValueError) for a
// wrong count, shape or device, naming the argument, before anything is written.

#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace unrollopt {

// `grads` must hold floating-point tensors (float16, bfloat16, float32, float64)
// on one device. Each state list must match it tensor by tensor in dtype, shape
// and device; `params` must too, or be empty.
using NamedTensorList = std::pair<const char*, at::TensorList>;
void check_parameter_lists(const char* op, at::TensorList grads,
                           c10::ArrayRef<NamedTensorList> states, at::TensorList params);

// `t` (the i-th tensor of argument `name`) matches `ref` (grads[i]).
void check_like(const char* op, const char* name, size_t i, const at::Tensor& t,
                const at::Tensor& ref);

// Every tensor of `list` (argument `name`) can be written in place: no element
// shares memory with another (as in an expanded tensor).
void check_writable(const char* op, const char* name, at::TensorList list);

// No tensor of a `written` list shares memory with another tensor of any list
// (written or `read`): an in-place step's result would then depend on the order
// of its writes. The error names both tensors.
void check_no_aliasing(const char* op, c10::ArrayRef<NamedTensorList> written,
                       c10::ArrayRef<NamedTensorList> read);

// Whether `t` is a tensor torch.compile traces (fake or functional).
bool traced(const at::Tensor& t);

// Whether a kernel may read `t`'s values here: a CPU tensor (reading a GPU's
// would synchronise) that is not one of torch.func's (batched, wrapped), of
// functionalization's or of a Python mode's (fake, traced by torch.compile).
bool readable(const at::Tensor& t);

// The step number, where it can be read without a synchronisation (a CPU
// tensor): at least 1 (steps count from 1, and step 0 divides by a zero bias
// correction).
void check_step(const char* op, const at::Tensor& step);

// A hyperparameter: a 0-d floating-point tensor (or integral, for `step`).
void check_hyperparameter(const char* op, const char* name, const at::Tensor& t);

}  // namespace unrollopt
