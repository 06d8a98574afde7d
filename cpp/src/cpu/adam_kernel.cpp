// Fused Adam, forward and backward, over a list of tensors. Compiled once per
// CPU capability (CPU_CAPABILITY is DEFAULT or AVX2, set by the build).

#include <ATen/Dispatch.h>

#include "../adam_math.h"
#include "kernels.h"
#include "multi_tensor.h"

namespace unrollopt::cpu::CPU_CAPABILITY {
namespace {

template <class scalar_t>
AdamCoef<OpVec<scalar_t>> vector_coef(const AdamScalars& hp) {
  const AdamCoef<double> c = adam_coef<double>(hp.lr, hp.beta1, hp.beta2, hp.weight_decay,
                                               hp.step, hp.eps, hp.eps_root, hp.maximize);
  using opmath_t = at::opmath_type<scalar_t>;
  return c.template map<OpVec<scalar_t>>(
      [](double x) { return OpVec<scalar_t>(static_cast<opmath_t>(x)); });
}

#define UNROLLOPT_STRINGIZE_(x) #x
#define UNROLLOPT_STRINGIZE(x) UNROLLOPT_STRINGIZE_(x)
#define UNROLLOPT_DISPATCH_FLOATING(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "unrollopt_adam", __VA_ARGS__)

void adam_forward_kernel(const AdamInputs& in, at::TensorList update_out, at::TensorList mu_out,
                  at::TensorList nu_out, bool add_to_param, const AdamScalars& hp) {
  const auto chunks = make_chunks(in.grads);
  for_each_chunk(chunks, [&](const Chunk& c, int64_t) {
    UNROLLOPT_DISPATCH_FLOATING(in.grads[c.tensor].scalar_type(), [&] {
      const auto coef = vector_coef<scalar_t>(hp);
      map_vectorized<scalar_t, 4, 3>(
          {in_ptr<scalar_t>(in.grads, c), in_ptr<scalar_t>(in.mus, c),
           in_ptr<scalar_t>(in.nus, c), in_ptr<scalar_t>(in.params, c)},
          {out_ptr<scalar_t>(update_out, c), out_ptr<scalar_t>(mu_out, c),
           out_ptr<scalar_t>(nu_out, c)},
          c.end - c.begin, [&](const auto& x, int64_t) {
            const auto y = unrollopt::adam_forward(x[0], x[1], x[2], x[3], coef);
            return std::array{add_to_param ? x[3] + y.update : y.update, y.mu, y.nu};
          });
    });
  });
}

void adam_backward_kernel(at::TensorList grad_update, at::TensorList grad_mu, at::TensorList grad_nu,
                   const AdamInputs& in, at::TensorList grad_grads_out,
                   at::TensorList grad_mus_out, at::TensorList grad_nus_out,
                   at::TensorList grad_params_out, const AdamScalars& hp, double* hyper_grad) {
  const auto chunks = make_chunks(in.grads);
  // Per-chunk partial sums of the hyperparameter gradients, added in chunk order
  // afterwards so the result does not depend on the number of threads.
  std::vector<std::array<double, 4>> partial(hyper_grad ? chunks.size() : 0);
  for_each_chunk(chunks, [&](const Chunk& c, int64_t index) {
    UNROLLOPT_DISPATCH_FLOATING(in.grads[c.tensor].scalar_type(), [&] {
      using Vec = OpVec<scalar_t>;
      const auto coef = vector_coef<scalar_t>(hp);
      const Vec zero(0);
      std::array<Vec, 4> sums{zero, zero, zero, zero};
      // Hyperparameter terms are compiled out unless asked for.
      const auto run = [&](auto with_hyper) {
        map_vectorized<scalar_t, 7, 4>(
            {in_ptr<scalar_t>(grad_update, c), in_ptr<scalar_t>(grad_mu, c),
             in_ptr<scalar_t>(grad_nu, c), in_ptr<scalar_t>(in.grads, c),
             in_ptr<scalar_t>(in.mus, c), in_ptr<scalar_t>(in.nus, c),
             in_ptr<scalar_t>(in.params, c)},
            {out_ptr<scalar_t>(grad_grads_out, c), out_ptr<scalar_t>(grad_mus_out, c),
             out_ptr<scalar_t>(grad_nus_out, c), out_ptr<scalar_t>(grad_params_out, c)},
            c.end - c.begin, [&](const auto& x, int64_t k) {
              const auto r = unrollopt::adam_vjp(x[0], x[1], x[2], x[3], x[4], x[5], x[6], coef);
              if constexpr (decltype(with_hyper)::value) {
                // Lanes past the tail hold zeros, whose terms need not vanish.
                const std::array terms{r.lr, r.beta1, r.beta2, r.weight_decay};
                for (size_t h = 0; h < 4; ++h) sums[h] += Vec::set(zero, terms[h], k);
              }
              return std::array{r.g, r.mu, r.nu, r.p};
            });
      };
      if (hyper_grad) {
        run(std::true_type{});
        for (size_t h = 0; h < 4; ++h) {
          at::opmath_type<scalar_t> lanes[Vec::size()];
          sums[h].store(lanes);
          double total = 0;
          for (auto lane : lanes) total += lane;
          partial[index][h] = total;
        }
      } else {
        run(std::false_type{});
      }
    });
  });
  if (hyper_grad) {
    std::fill(hyper_grad, hyper_grad + 4, 0.0);
    for (const auto& p : partial) {
      for (size_t h = 0; h < 4; ++h) hyper_grad[h] += p[h];
    }
  }
}

}  // namespace

const Kernels kernels{
    /*capability=*/UNROLLOPT_STRINGIZE(CPU_CAPABILITY),
    &adam_forward_kernel,
    &adam_backward_kernel,
};

}  // namespace unrollopt::cpu::CPU_CAPABILITY
