#pragma once

#include <ATen/core/Tensor.h>

namespace unrollopt {

// A hyperparameter: a number, or a 0-d floating-point tensor that may require
// grad (to meta-learn it). Either way the operators receive a 0-d tensor, made
// once here rather than at every step.
class Hyperparameter {
 public:
  Hyperparameter(double value);      // NOLINT(google-explicit-constructor)
  Hyperparameter(at::Tensor value);  // NOLINT(google-explicit-constructor)

  const at::Tensor& tensor() const { return tensor_; }
  // The current value (reads the tensor).
  double value() const;

 private:
  at::Tensor tensor_;
};

}  // namespace unrollopt
