// The CPU kernels of every rule give the same bits whatever CPU capability
// they were compiled for: results must not depend on the machine.

#include <gtest/gtest.h>

#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "cpu/kernels.h"
#include "testing.h"
#include "unrollopt/rules/all.h"

namespace {

using namespace unrollopt::testing;
namespace cpu = unrollopt::cpu;

#if defined(__x86_64__) || defined(__i386__)

struct Run {
  TensorVector forward;   // update, then the new states
  TensorVector backward;  // cotangents of g, the states, p
  std::vector<double> coef_sums;
};

template <class Rule>
Run run(const cpu::Kernels<Rule>& kernels, at::ScalarType dtype) {
  constexpr size_t NS = Rule::states.size();
  constexpr size_t NC = Rule::num_coef;
  // Valid for every rule: rates in [0, 1), eps > 0, every flag on.
  std::array<double, Rule::hyperparameters.size()> hyper;
  hyper.fill(0.3);
  std::vector<double> values;
  for (const std::string_view name : Rule::Options::names) {
    values.push_back(name == "eps"              ? 1e-3
                     : name == "eps_root"       ? 1e-6
                     : name == "momentum_decay" ? 4e-3
                                                : 1.0);
  }
  const cpu::Scalars<Rule> s{Rule::template coef<double>(hyper, 3.0, Rule::Options::read(values))};
  at::manual_seed(0);
  // Vectors, tails and more than one chunk.
  const std::vector<int64_t> sizes{1, 7, 1025, 70001};
  const auto opts = at::TensorOptions().dtype(dtype);
  TensorVector g, p, gu;
  std::array<TensorVector, NS> st, gs;
  for (int64_t n : sizes) {
    g.push_back(at::randn({n}, opts));
    p.push_back(at::randn({n}, opts));
    gu.push_back(at::randn({n}, opts));
    for (size_t k = 0; k < NS; ++k) {
      // Positive (second moments), the others smaller than the first (a centered
      // RMSprop's grad_avg^2 below its square_avg).
      st[k].push_back(k == 0 ? at::rand({n}, opts) + 0.1 : 0.3 * at::rand({n}, opts));
      gs[k].push_back(at::randn({n}, opts));
    }
  }
  const auto empty_like = [](const TensorVector& list) {
    TensorVector out;
    for (const auto& t : list) out.push_back(at::empty_like(t));
    return out;
  };
  std::array<at::TensorList, NS> st_lists, gs_lists;
  for (size_t k = 0; k < NS; ++k) {
    st_lists[k] = st[k];
    gs_lists[k] = gs[k];
  }
  const cpu::Lists<Rule> in{g, st_lists, p};

  Run r;
  TensorVector update = empty_like(g);
  std::array<TensorVector, NS> new_st;
  std::array<at::TensorList, NS> new_st_lists;
  for (size_t k = 0; k < NS; ++k) new_st_lists[k] = new_st[k] = empty_like(st[k]);
  kernels.forward(in, update, new_st_lists, false, s);
  r.forward = update;
  for (const auto& list : new_st) r.forward.insert(r.forward.end(), list.begin(), list.end());

  TensorVector grad_g = empty_like(g), grad_p = empty_like(p);
  std::array<TensorVector, NS> grad_st;
  std::array<at::TensorList, NS> grad_st_lists;
  for (size_t k = 0; k < NS; ++k) grad_st_lists[k] = grad_st[k] = empty_like(st[k]);
  cpu::CoefGrads<Rule> coef{};
  coef.needed.fill(true);
  kernels.backward(gu, gs_lists, in, cpu::Lists<Rule>{grad_g, grad_st_lists, grad_p}, s, &coef);
  r.backward = grad_g;
  for (const auto& list : grad_st) r.backward.insert(r.backward.end(), list.begin(), list.end());
  r.backward.insert(r.backward.end(), grad_p.begin(), grad_p.end());
  r.coef_sums.assign(coef.sums.begin(), coef.sums.begin() + NC);
  return r;
}

template <class Rule>
void expect_same_bits() {
  for (const at::ScalarType dtype : {at::kDouble, at::kFloat, at::kBFloat16}) {
    const Run portable = run<Rule>(cpu::DEFAULT::kernels<Rule>(), dtype);
    const Run avx2 = run<Rule>(cpu::AVX2::kernels<Rule>(), dtype);
    const std::string what = std::string(Rule::name) + " " + c10::toString(dtype);
    ASSERT_EQ(portable.forward.size(), avx2.forward.size());
    for (size_t i = 0; i < portable.forward.size(); ++i) {
      EXPECT_TRUE(at::equal(portable.forward[i], avx2.forward[i])) << what << " forward " << i;
      EXPECT_TRUE(at::isfinite(portable.forward[i]).all().item<bool>()) << what << " forward " << i;
    }
    for (size_t i = 0; i < portable.backward.size(); ++i) {
      EXPECT_TRUE(at::equal(portable.backward[i], avx2.backward[i])) << what << " backward " << i;
    }
    EXPECT_EQ(portable.coef_sums, avx2.coef_sums) << what << " coefficient cotangents";
  }
}

TEST(CpuKernels, EveryCapabilityGivesTheSameBits) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    GTEST_SKIP() << "this CPU has no AVX2 and FMA: only the portable kernels can run";
  }
#define UNROLLOPT_EXPECT_SAME_BITS(Rule) expect_same_bits<Rule>();
  UNROLLOPT_FOR_EACH_RULE(UNROLLOPT_EXPECT_SAME_BITS)
#undef UNROLLOPT_EXPECT_SAME_BITS
}

#endif

}  // namespace
