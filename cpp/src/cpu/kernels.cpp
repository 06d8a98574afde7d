// The fused forward and backward of every optimizer rule, over lists of tensors.
// Compiled once per CPU capability (CPU_CAPABILITY is DEFAULT or AVX2, set by
// the build).

#include <ATen/Dispatch.h>

#include "kernels.h"
#include "multi_tensor.h"
#include "unrollopt/rules/all.h"

namespace unrollopt::cpu::CPU_CAPABILITY {
namespace {

#define UNROLLOPT_STRINGIZE_(x) #x
#define UNROLLOPT_STRINGIZE(x) UNROLLOPT_STRINGIZE_(x)
#define UNROLLOPT_DISPATCH_FLOATING(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "unrollopt", __VA_ARGS__)

// The step's coefficients (computed in double) as vectors of the math type.
template <class Rule, class scalar_t>
auto vector_coef(const Scalars<Rule>& s) {
  std::array<OpVec<scalar_t>, Rule::num_coef> out;
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = OpVec<scalar_t>(static_cast<at::opmath_type<scalar_t>>(s.coef[i]));
  }
  return out;
}

template <class Rule>
void forward(const Lists<Rule>& in, at::TensorList update_out,
             const std::array<at::TensorList, Rule::states.size()>& states_out, bool add_to_param,
             const Scalars<Rule>& s) {
  constexpr size_t NS = Rule::states.size();
  const auto chunks = make_chunks(in.grads);
  for_each_chunk(chunks, [&](const Chunk& c, int64_t) {
    UNROLLOPT_DISPATCH_FLOATING(in.grads[c.tensor].scalar_type(), [&] {
      const auto coef = vector_coef<Rule, scalar_t>(s);
      std::array<const scalar_t*, NS + 2> inputs;
      std::array<scalar_t*, NS + 1> outputs;
      inputs[0] = in_ptr<scalar_t>(in.grads, c);
      outputs[0] = out_ptr<scalar_t>(update_out, c);
      for (size_t k = 0; k < NS; ++k) {
        inputs[1 + k] = in_ptr<scalar_t>(in.states[k], c);
        outputs[1 + k] = out_ptr<scalar_t>(states_out[k], c);
      }
      inputs[NS + 1] = in_ptr<scalar_t>(in.params, c);
      map_vectorized<scalar_t, NS + 2, NS + 1>(
          inputs, outputs, c.end - c.begin, [&](const auto& x, auto) {
            std::array<OpVec<scalar_t>, NS> state;
            for (size_t k = 0; k < NS; ++k) state[k] = x[1 + k];
            auto y = Rule::forward(x[0], state, x[NS + 1], coef);
            if (add_to_param) y[0] = x[NS + 1] + y[0];
            return y;
          });
    });
  });
}

template <class Rule>
void backward(at::TensorList grad_update,
              const std::array<at::TensorList, Rule::states.size()>& grad_states,
              const Lists<Rule>& in, const Lists<Rule>& out, const Scalars<Rule>& s,
              CoefGrads<Rule>* coef_grads) {
  constexpr size_t NS = Rule::states.size();
  constexpr size_t NC = Rule::num_coef;
  const auto chunks = make_chunks(in.grads);
  // Per-chunk sums of the coefficient cotangents, added in chunk order
  // afterwards so the result does not depend on the number of threads.
  std::vector<std::array<double, NC>> partial(coef_grads ? chunks.size() : 0);
  const std::array<bool, NC> needed = coef_grads ? coef_grads->needed : std::array<bool, NC>{};
  for_each_chunk(chunks, [&](const Chunk& c, int64_t index) {
    UNROLLOPT_DISPATCH_FLOATING(in.grads[c.tensor].scalar_type(), [&] {
      using Vec = OpVec<scalar_t>;
      const auto coef = vector_coef<Rule, scalar_t>(s);
      // Inputs: cotangents of (update, states), then g, states, p.
      std::array<const scalar_t*, 2 * NS + 3> inputs;
      std::array<scalar_t*, NS + 2> outputs;
      inputs[0] = in_ptr<scalar_t>(grad_update, c);
      inputs[NS + 1] = in_ptr<scalar_t>(in.grads, c);
      outputs[0] = out_ptr<scalar_t>(out.grads, c);
      for (size_t k = 0; k < NS; ++k) {
        inputs[1 + k] = in_ptr<scalar_t>(grad_states[k], c);
        inputs[NS + 2 + k] = in_ptr<scalar_t>(in.states[k], c);
        outputs[1 + k] = out_ptr<scalar_t>(out.states[k], c);
      }
      inputs[2 * NS + 2] = in_ptr<scalar_t>(in.params, c);
      outputs[NS + 1] = out_ptr<scalar_t>(out.params, c);
      std::array<Vec, NC> sums;
      sums.fill(Vec(0));
      // The coefficient terms are compiled out unless asked for.
      const auto run = [&](auto with_coef) {
        map_vectorized<scalar_t, 2 * NS + 3, NS + 2>(
            inputs, outputs, c.end - c.begin, [&](const auto& x, auto lanes) {
              std::array<Vec, NS> g_state, state;
              for (size_t j = 0; j < NS; ++j) {
                g_state[j] = x[1 + j];
                state[j] = x[NS + 2 + j];
              }
              const auto r = Rule::vjp(x[0], g_state, x[NS + 1], state, x[2 * NS + 2], coef);
              if constexpr (decltype(with_coef)::value) {
                for (size_t j = 0; j < NC; ++j) {
                  if (needed[j]) sums[j] += valid_lanes(r.coef[j], lanes);
                }
              }
              std::array<Vec, NS + 2> y;
              y[0] = r.g;
              for (size_t j = 0; j < NS; ++j) y[1 + j] = r.states[j];
              y[NS + 1] = r.p;
              return y;
            });
      };
      if (coef_grads) {
        run(std::true_type{});
        for (size_t j = 0; j < NC; ++j) {
          at::opmath_type<scalar_t> lanes[Vec::size()];
          sums[j].store(lanes);
          double total = 0;
          for (auto lane : lanes) total += lane;
          partial[index][j] = total;
        }
      } else {
        run(std::false_type{});
      }
    });
  });
  if (coef_grads) {
    coef_grads->sums.fill(0.0);
    for (const auto& p : partial) {
      for (size_t j = 0; j < NC; ++j) coef_grads->sums[j] += p[j];
    }
  }
}

}  // namespace

template <class Rule>
Kernels<Rule> kernels() {
  return {UNROLLOPT_STRINGIZE(CPU_CAPABILITY), &forward<Rule>, &backward<Rule>};
}

#define UNROLLOPT_INSTANTIATE(Rule) template Kernels<Rule> kernels<Rule>();
UNROLLOPT_FOR_EACH_RULE(UNROLLOPT_INSTANTIATE)
#undef UNROLLOPT_INSTANTIATE

}  // namespace unrollopt::cpu::CPU_CAPABILITY
