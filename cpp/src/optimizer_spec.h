#pragma once
// Each optimizer of unrollopt/optimizers.h as a Spec: its name, the operator
// its options select, and its options' and state's fields by name. The
// functional optimizers (optimizers.cpp) and the torch::optim ones (optim.cpp)
// derive everything else from these names (the ranges: detail::check_setting).

#include <cmath>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <ATen/ops/mul.h>
#include <c10/util/Exception.h>

#include "unrollopt/optimizers.h"

namespace unrollopt::detail {

// A setting as a Spec lists it, by name: a hyperparameter, a number or a flag
// of an Options object (const or not: Const says which).
template <bool Const>
struct Field {
  template <class T>
  using Ptr = std::conditional_t<Const, const T*, T*>;
  const char* name;
  std::variant<Ptr<Hyperparameter>, Ptr<double>, Ptr<bool>> value;
};
template <class O>
using FieldsOf = std::vector<Field<std::is_const_v<O>>>;
// A field of the options `o`, named as its member: the name the rules use.
#define UNROLLOPT_FIELD(member) {#member, &o.member}

// Whether a hyperparameter is there: not a constant 0 (a tensor that requires
// grad always is: it may be learned).
inline bool present(const Hyperparameter& h) {
  return h.tensor().requires_grad() || !h.tensor().is_cpu() || h.value() != 0;
}

template <class Options>
struct Spec;

template <bool Decoupled>
struct Spec<AdamFamilyOptions<Decoupled>> {
  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";
  using O = AdamFamilyOptions<Decoupled>;
  static std::string op(const O& o) {
    return std::string(Decoupled ? "adamw" : "adam") + (o.amsgrad ? "_amsgrad" : "");
  }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),      UNROLLOPT_FIELD(beta1),    UNROLLOPT_FIELD(beta2),
            UNROLLOPT_FIELD(eps),     UNROLLOPT_FIELD(eps_root), UNROLLOPT_FIELD(weight_decay),
            UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdamState& s, F&& f) {
    f("mu", s.mu), f("nu", s.nu), f("nu_max", s.nu_max);
  }
};

template <>
struct Spec<AdamaxOptions> {
  static constexpr const char* name = "Adamax";
  static std::string op(const AdamaxOptions&) { return "adamax"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),  UNROLLOPT_FIELD(beta1),        UNROLLOPT_FIELD(beta2),
            UNROLLOPT_FIELD(eps), UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdamState& s, F&& f) {
    f("mu", s.mu), f("nu", s.nu);
  }
};

template <>
struct Spec<RAdamOptions> {
  static constexpr const char* name = "RAdam";
  static std::string op(const RAdamOptions&) { return "radam"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),           UNROLLOPT_FIELD(beta1),
            UNROLLOPT_FIELD(beta2),        UNROLLOPT_FIELD(eps),
            UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(decoupled_weight_decay),
            UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdamState& s, F&& f) {
    f("mu", s.mu), f("nu", s.nu);
  }
};

template <>
struct Spec<NAdamOptions> {
  static constexpr const char* name = "NAdam";
  static std::string op(const NAdamOptions&) { return "nadam"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),
            UNROLLOPT_FIELD(beta1),
            UNROLLOPT_FIELD(beta2),
            UNROLLOPT_FIELD(eps),
            UNROLLOPT_FIELD(weight_decay),
            UNROLLOPT_FIELD(momentum_decay),
            UNROLLOPT_FIELD(decoupled_weight_decay),
            UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(NAdamState& s, F&& f) {
    f("mu", s.mu), f("nu", s.nu);
  }
};

template <>
struct Spec<RMSpropOptions> {
  static constexpr const char* name = "RMSprop";
  static std::string op(const RMSpropOptions& o) {
    return std::string("rmsprop") + (o.centered ? "_centered" : "") +
           (present(o.momentum) ? "_momentum" : "");
  }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),       UNROLLOPT_FIELD(alpha),
            UNROLLOPT_FIELD(eps),      UNROLLOPT_FIELD(weight_decay),
            UNROLLOPT_FIELD(momentum), UNROLLOPT_FIELD(initial_scale),
            UNROLLOPT_FIELD(nesterov), UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(RMSpropState& s, F&& f) {
    f("square_avg", s.square_avg), f("grad_avg", s.grad_avg),
        f("momentum_buffer", s.momentum_buffer);
  }
  static double initial(const RMSpropOptions& o, std::string_view state) {
    return state == "square_avg" ? o.initial_scale : 0.0;
  }
  static void check(const RMSpropOptions& o) {
    TORCH_CHECK_VALUE(!o.nesterov || present(o.momentum),
                      "unrollopt.RMSprop: nesterov=true needs a momentum (got momentum=0)");
  }
};

template <>
struct Spec<AdagradOptions> {
  static constexpr const char* name = "Adagrad";
  static std::string op(const AdagradOptions&) { return "adagrad"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),           UNROLLOPT_FIELD(lr_decay),
            UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(initial_accumulator_value),
            UNROLLOPT_FIELD(eps),          UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdagradState& s, F&& f) {
    f("sum", s.sum);
  }
  static double initial(const AdagradOptions& o, std::string_view) {
    return o.initial_accumulator_value;
  }
};

template <>
struct Spec<AdadeltaOptions> {
  static constexpr const char* name = "Adadelta";
  static std::string op(const AdadeltaOptions&) { return "adadelta"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr), UNROLLOPT_FIELD(rho), UNROLLOPT_FIELD(eps),
            UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdadeltaState& s, F&& f) {
    f("square_avg", s.square_avg), f("acc_delta", s.acc_delta);
  }
};

template <>
struct Spec<LionOptions> {
  static constexpr const char* name = "Lion";
  static std::string op(const LionOptions&) { return "lion"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr), UNROLLOPT_FIELD(beta1), UNROLLOPT_FIELD(beta2),
            UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(LionState& s, F&& f) {
    f("mu", s.mu);
  }
};

template <>
struct Spec<AdanOptions> {
  static constexpr const char* name = "Adan";
  static std::string op(const AdanOptions&) { return "adan"; }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),      UNROLLOPT_FIELD(beta1), UNROLLOPT_FIELD(beta2),
            UNROLLOPT_FIELD(beta3),   UNROLLOPT_FIELD(eps),   UNROLLOPT_FIELD(weight_decay),
            UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(AdanState& s, F&& f) {
    f("mu", s.mu), f("delta", s.delta), f("nu", s.nu), f("prev_grad", s.prev_grad);
  }
};

template <>
struct Spec<SgdOptions> {
  static constexpr const char* name = "Sgd";
  static std::string op(const SgdOptions& o) {
    return present(o.momentum) ? "sgd_momentum" : "sgd";
  }
  template <class Opts>
  static FieldsOf<Opts> fields(Opts& o) {
    return {UNROLLOPT_FIELD(lr),           UNROLLOPT_FIELD(momentum), UNROLLOPT_FIELD(dampening),
            UNROLLOPT_FIELD(weight_decay), UNROLLOPT_FIELD(nesterov), UNROLLOPT_FIELD(maximize)};
  }
  template <class F>
  static void states(SgdState& s, F&& f) {
    f("momentum_buffer", s.momentum_buffer);
  }
  static void check(const SgdOptions& o) {
    TORCH_CHECK_VALUE(!o.nesterov || (present(o.momentum) && !present(o.dampening)),
                      "unrollopt.Sgd: nesterov=true requires a momentum and zero dampening");
  }
};

template <class S, class Options>
concept HasCheck = requires(const Options& o) { S::check(o); };
template <class S, class Options>
concept HasInitial = requires(const Options& o) { S::initial(o, std::string_view()); };
template <class Options>
inline constexpr bool is_nadam = std::is_same_v<Options, NAdamOptions>;

// The field `name`, which the operator `op` takes.
template <bool C>
const Field<C>& find_field(const std::vector<Field<C>>& fields, std::string_view name,
                           const char* optimizer, const std::string& op) {
  for (const auto& f : fields) {
    if (name == f.name) return f;
  }
  // A Spec that does not fit its rule: a bug here, not the caller's.
  TORCH_CHECK(false, "unrollopt.", optimizer, ": the operator ", op, " takes ", name,
              ", which the options lack");
}

// The operator's option `name` (a number or a flag) as the number it takes.
template <bool C>
double option_value(const std::vector<Field<C>>& fields, std::string_view name,
                    const char* optimizer, const std::string& op) {
  return std::visit(
      [&](const auto* v) -> double {
        using T = std::decay_t<decltype(*v)>;
        if constexpr (std::is_same_v<T, Hyperparameter>) {
          TORCH_CHECK(false, "unrollopt.", optimizer, ": ", name, " is a hyperparameter of ", op);
        } else {
          return static_cast<double>(*v);
        }
      },
      find_field(fields, name, optimizer, op).value);
}

// NAdam's product of momentum coefficients after step t (0-d float64,
// differentiable with respect to a tensor beta1): the product so far times
// mu_t = beta1 (1 - 0.96^(t psi) / 2).
inline at::Tensor nadam_product(const NAdamOptions& o, const at::Tensor& product, double t) {
  const double factor = 1 - 0.5 * std::pow(0.96, t * o.momentum_decay);
  return at::mul(product, at::mul(o.beta1.tensor(), factor));
}

}  // namespace unrollopt::detail

#undef UNROLLOPT_FIELD
