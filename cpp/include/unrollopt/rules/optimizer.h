#pragma once
// What every optimizer of the C++ API declares, next to its rules (see
// rules/adan.h for a short one, rules/rmsprop.h for one over several rules):
//
//   struct XState { lists...; at::Tensor count;  UNROLLOPT_STATES(lists...) };
//   struct XOptions {
//     settings with their defaults (those of the Python alias unrollopt.x)
//     UNROLLOPT_SETTINGS(every setting): settings() by name, and the two
//         settings every optimizer has, last: maximize and moment_requires_grad
//     static constexpr const char* name = "X";   unrollopt::X, in messages
//     using State = XState;
//     using Rule = rules::X;                      the rule; or a family of rules:
//     static constexpr const char* family = "x";  with variants, the settings
//     static constexpr std::array variants{"a"};  that select "x_a" when on (a flag
//                                                 true, a hyperparameter present)
//     optional, as data that Python reads too (every engine, any language):
//       static constexpr std::array<detail::Requirement, N> requirements
//           {{"nesterov", "momentum", true}}: with the first setting on, the
//           second must be on (true) or off (false)
//       static constexpr std::array<detail::InitialState, N> initial_states
//           {{"square_avg", "initial_scale"}}: a state that starts at a setting
//   and, with a rule that has a scalar state (NAdam's mu_product: rules/rule.h),
//   XState::scalar_state, a member pointer to the 0-d tensor that keeps it
//   };
//
// The functional optimizers (unrollopt/optimizers.h) and the torch::optim ones
// (unrollopt/optim.h) derive everything else from the names: a setting named as
// one of the rule's hyperparameters or options is passed as that; every number
// is checked against its range by name (detail::check_setting).

#include <array>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <ATen/core/Tensor.h>

#include "unrollopt/hyperparameter.h"

namespace unrollopt::detail {

// A setting by name: a hyperparameter, a number or a flag of an Options object
// (const or not: Const says which).
template <bool Const>
struct Field {
  template <class T>
  using Ptr = std::conditional_t<Const, const T*, T*>;
  const char* name;
  std::variant<Ptr<Hyperparameter>, Ptr<double>, Ptr<bool>> value;
};
template <class O>
using FieldsOf = std::vector<Field<std::is_const_v<O>>>;

// Whether a hyperparameter is there: not a constant 0 (a tensor that requires
// grad always is: it may be learned). Selects an operator (momentum or not).
inline bool present(const Hyperparameter& h) {
  return h.tensor().requires_grad() || !h.tensor().is_cpu() || h.value() != 0;
}

// With `flag` on, `setting` must be on (`on`) or off; see the contract above.
struct Requirement {
  const char* flag;
  const char* setting;
  bool on;
};
// `state` starts at the value of the number `setting`.
struct InitialState {
  const char* state;
  const char* setting;
};

}  // namespace unrollopt::detail

// MACRO(a) for each argument a (up to 27).
#define UNROLLOPT_FOR_EACH(MACRO, ...) \
  __VA_OPT__(UNROLLOPT_EXPAND_(UNROLLOPT_FOR_EACH_(MACRO, __VA_ARGS__)))
#define UNROLLOPT_FOR_EACH_(MACRO, a, ...) \
  MACRO(a) __VA_OPT__(UNROLLOPT_FOR_EACH_AGAIN_ UNROLLOPT_PARENS_(MACRO, __VA_ARGS__))
#define UNROLLOPT_FOR_EACH_AGAIN_() UNROLLOPT_FOR_EACH_
#define UNROLLOPT_PARENS_ ()
#define UNROLLOPT_EXPAND_(...) \
  UNROLLOPT_EXPAND4_(UNROLLOPT_EXPAND4_(UNROLLOPT_EXPAND4_(__VA_ARGS__)))
#define UNROLLOPT_EXPAND4_(...) \
  UNROLLOPT_EXPAND2_(UNROLLOPT_EXPAND2_(UNROLLOPT_EXPAND2_(__VA_ARGS__)))
#define UNROLLOPT_EXPAND2_(...) \
  UNROLLOPT_EXPAND1_(UNROLLOPT_EXPAND1_(UNROLLOPT_EXPAND1_(__VA_ARGS__)))
#define UNROLLOPT_EXPAND1_(...) __VA_ARGS__

// The settings every optimizer has, after its own (declared here, in this
// order, for designated initializers), and every setting by name: settings(o)
// lists them as detail::Field (o const or not).
#define UNROLLOPT_SETTINGS(...)                                                                   \
  bool maximize = false;             /* maximize the objective instead */                         \
  bool moment_requires_grad = false; /* init(): states that require grad */                       \
  template <class Self>                                                                           \
  static ::unrollopt::detail::FieldsOf<Self> settings(Self& o) {                                  \
    return {UNROLLOPT_FOR_EACH(UNROLLOPT_SETTING_, __VA_ARGS__, maximize, moment_requires_grad)}; \
  }
#define UNROLLOPT_SETTING_(member) {#member, &o.member},

// The state lists of a State struct by name: for_each_list(f) calls f(name, list).
#define UNROLLOPT_STATES(...)                         \
  template <class F>                                  \
  void for_each_list(F&& f) {                         \
    UNROLLOPT_FOR_EACH(UNROLLOPT_STATE_, __VA_ARGS__) \
  }
#define UNROLLOPT_STATE_(member) f(#member, member);
