// The fused CUDA kernels: each rule's own math (../include/unrollopt/rules/) over lists of
// tensors, many tensors per launch (multi-tensor apply); half and bfloat16 are
// computed in float32. Each block computes the step's coefficients from the
// step and hyperparameters where they are, and the backward reduces the
// coefficients' cotangents and chains them to the hyperparameters on the
// device: nothing waits for the GPU, so a step can be captured in a CUDA graph.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"
#include "unrollopt/rules/all.h"

namespace unrollopt::cuda {
namespace {

constexpr int kThreads = 512;          // per block
constexpr int64_t kChunkSize = 65536;  // elements per block
constexpr int kMaxBlocks = 256;        // per launch
constexpr int kWarpSize = 32;
constexpr int kChainThreads = 256;
// The limit on a kernel's parameters, and the part of it a launch's tables use
// (the rest holds the step, the hyperparameters and the options).
constexpr size_t kParamBytes = 4096;
constexpr size_t kTableBytes = kParamBytes - 512;

// A 0-d tensor's value: read on the device from `ptr` (of type `dtype`), or
// passed by value (ptr null) from a tensor on the CPU.
struct Scalar {
  const void* ptr = nullptr;
  double value = 0;
  at::ScalarType dtype = at::kDouble;
};

// Where a 0-d floating-point result goes (nowhere if ptr is null).
struct ScalarOut {
  void* ptr = nullptr;
  at::ScalarType dtype = at::kDouble;
};

__device__ double load(const Scalar& s) {
  if (s.ptr == nullptr) return s.value;
  switch (s.dtype) {
    case at::kFloat:
      return *static_cast<const float*>(s.ptr);
    case at::kHalf:
      return static_cast<float>(*static_cast<const at::Half*>(s.ptr));
    case at::kBFloat16:
      return static_cast<float>(*static_cast<const at::BFloat16*>(s.ptr));
    case at::kLong:
      return static_cast<double>(*static_cast<const int64_t*>(s.ptr));
    case at::kInt:
      return *static_cast<const int32_t*>(s.ptr);
    default:
      return *static_cast<const double*>(s.ptr);  // make_scalar converted the rest
  }
}

__device__ void store(const ScalarOut& s, double v) {
  switch (s.dtype) {
    case at::kFloat:
      *static_cast<float*>(s.ptr) = static_cast<float>(v);
      break;
    case at::kHalf:
      *static_cast<at::Half*>(s.ptr) = static_cast<float>(v);
      break;
    case at::kBFloat16:
      *static_cast<at::BFloat16*>(s.ptr) = static_cast<float>(v);
      break;
    default:
      *static_cast<double*>(s.ptr) = v;  // backward() checked the type
  }
}

// The step, the hyperparameters and the options of one call.
template <class Rule>
struct Hyper {
  static constexpr size_t NH = Rule::hyperparameters.size();
  std::array<Scalar, NH> values;
  Scalar step;
  typename Rule::Options options;

  __device__ std::array<double, NH> load_values() const {
    std::array<double, NH> out;
    for (size_t i = 0; i < NH; ++i) out[i] = load(values[i]);
    return out;
  }
};

// The step's coefficients in the math type, computed by the block's first
// thread (in double, as on the CPU) and shared.
template <class Rule, class opmath_t>
__device__ std::array<opmath_t, Rule::num_coef> block_coef(const Hyper<Rule>& h) {
  constexpr size_t NC = Rule::num_coef;
  __shared__ opmath_t shared[NC];
  if (threadIdx.x == 0) {
    const auto c = Rule::template coef<double>(h.load_values(), load(h.step), h.options);
    for (size_t j = 0; j < NC; ++j) shared[j] = static_cast<opmath_t>(c[j]);
  }
  __syncthreads();
  std::array<opmath_t, NC> out;
  for (size_t j = 0; j < NC; ++j) out[j] = shared[j];
  return out;
}

// One launch's work: NIn input and NOut output lists of up to kMaxTensors
// tensors (null: an input reads as zeros, an output is not written), and for
// each block the tensor and the chunk of it that it does.
template <size_t NIn, size_t NOut>
struct Batch {
  static constexpr int kMaxTensors = static_cast<int>(
      (kTableBytes - sizeof(int64_t) - kMaxBlocks * (sizeof(int32_t) + sizeof(uint8_t))) /
      (sizeof(int64_t) * (NIn + NOut + 1)));
  static_assert(kMaxTensors >= 1 && kMaxTensors <= 255);
  const void* in[NIn][kMaxTensors];
  void* out[NOut][kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t first_block;  // this launch's first block among all of the call's launches
  int32_t block_chunk[kMaxBlocks];
  uint8_t block_tensor[kMaxBlocks];
};

// Forward: in = (g, states..., p), out = (update, states...).
template <class Rule>
using ForwardBatch = Batch<Rule::states.size() + 2, Rule::states.size() + 1>;
// Backward: in = (cotangents of update and states..., g, states..., p),
// out = (grad g, grad states..., grad p).
template <class Rule>
using BackwardBatch = Batch<2 * Rule::states.size() + 3, Rule::states.size() + 2>;

// Consecutive elements per thread and iteration: 16 bytes of float32, 8 of
// half types; float64 takes 2 (16 bytes), its registers being twice as many.
template <class T>
constexpr int kILP = sizeof(T) == 8 ? 2 : 4;

template <class T>
struct alignas(sizeof(T) * kILP<T>) Pack {
  T v[kILP<T>];
};

// y = f(x) for every element of the block's chunk, x holding the element of
// each input and y that of each output, in the math type. kILP consecutive
// elements per thread and iteration, loaded as one vector where aligned.
template <class scalar_t, size_t NIn, size_t NOut, class F>
__device__ __forceinline__ void map_chunk(const Batch<NIn, NOut>& b, const F& f) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int ILP = kILP<scalar_t>;
  const int t = b.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(b.block_chunk[blockIdx.x]) * kChunkSize;
  const int64_t n = b.numel[t] - begin < kChunkSize ? b.numel[t] - begin : kChunkSize;
  const scalar_t* in[NIn];
  scalar_t* out[NOut];
  // Chunks start at multiples of kILP: a tensor's alignment is its chunks'.
  bool aligned = true;
  const auto is_aligned = [](const void* p) {
    return reinterpret_cast<uintptr_t>(p) % sizeof(Pack<scalar_t>) == 0;
  };
  for (size_t a = 0; a < NIn; ++a) {
    in[a] = b.in[a][t] ? static_cast<const scalar_t*>(b.in[a][t]) + begin : nullptr;
    aligned = aligned && is_aligned(in[a]);
  }
  for (size_t a = 0; a < NOut; ++a) {
    out[a] = b.out[a][t] ? static_cast<scalar_t*>(b.out[a][t]) + begin : nullptr;
    aligned = aligned && is_aligned(out[a]);
  }
  // The loops over lists and lanes unroll: x, y and the pointers stay in registers.
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * ILP; i < n;
       i += static_cast<int64_t>(kThreads) * ILP) {
    const bool full = aligned && i + ILP <= n;
    std::array<opmath_t, NIn> x[ILP];
#pragma unroll
    for (size_t a = 0; a < NIn; ++a) {
      if (in[a] == nullptr) {
        for (int k = 0; k < ILP; ++k) x[k][a] = 0;
      } else if (full) {
        const Pack<scalar_t> p = *reinterpret_cast<const Pack<scalar_t>*>(in[a] + i);
        for (int k = 0; k < ILP; ++k) x[k][a] = static_cast<opmath_t>(p.v[k]);
      } else {
        for (int k = 0; k < ILP; ++k) {
          x[k][a] = i + k < n ? static_cast<opmath_t>(in[a][i + k]) : opmath_t(0);
        }
      }
    }
    std::array<opmath_t, NOut> y[ILP];
#pragma unroll
    for (int k = 0; k < ILP; ++k) {
      if (full || i + k < n) y[k] = f(x[k]);
    }
#pragma unroll
    for (size_t a = 0; a < NOut; ++a) {
      if (out[a] == nullptr) continue;
      if (full) {
        Pack<scalar_t> p;
        for (int k = 0; k < ILP; ++k) p.v[k] = static_cast<scalar_t>(y[k][a]);
        *reinterpret_cast<Pack<scalar_t>*>(out[a] + i) = p;
      } else {
        for (int k = 0; k < ILP && i + k < n; ++k) out[a][i + k] = static_cast<scalar_t>(y[k][a]);
      }
    }
  }
}

// out[j] = the sum of v[j] over the block's threads, in a fixed order.
template <class T, size_t N>
__device__ void block_sum(const std::array<T, N>& v, double* out) {
  constexpr int kWarps = kThreads / kWarpSize;
  __shared__ double warp_sums[N][kWarps];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (size_t j = 0; j < N; ++j) {
    double s = v[j];
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      s += __shfl_down_sync(0xffffffffu, s, offset);
    }
    if (lane == 0) warp_sums[j][warp] = s;
  }
  __syncthreads();
  if (threadIdx.x < N) {
    double s = 0;
    for (int w = 0; w < kWarps; ++w) s += warp_sums[threadIdx.x][w];
    out[threadIdx.x] = s;
  }
}

template <class Rule, class scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const ForwardBatch<Rule> b, const Hyper<Rule> h, bool add_to_param) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr size_t NS = Rule::states.size();
  const auto c = block_coef<Rule, opmath_t>(h);
  map_chunk<scalar_t>(b, [&](const std::array<opmath_t, NS + 2>& x) {
    std::array<opmath_t, NS> state;
    for (size_t k = 0; k < NS; ++k) state[k] = x[1 + k];
    auto y = Rule::forward(x[0], state, x[NS + 1], c);
    if (add_to_param) y[0] = x[NS + 1] + y[0];
    return y;
  });
}

// With WithCoef, also the block's sums of the coefficients' cotangents, into
// row first_block + blockIdx.x of coef_partials.
template <class Rule, class scalar_t, bool WithCoef>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const BackwardBatch<Rule> b, const Hyper<Rule> h, double* coef_partials) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr size_t NS = Rule::states.size();
  constexpr size_t NC = Rule::num_coef;
  const auto c = block_coef<Rule, opmath_t>(h);
  std::array<opmath_t, NC> sums{};
  map_chunk<scalar_t>(b, [&](const std::array<opmath_t, 2 * NS + 3>& x) {
    std::array<opmath_t, NS> g_state, state;
    for (size_t k = 0; k < NS; ++k) {
      g_state[k] = x[1 + k];
      state[k] = x[NS + 2 + k];
    }
    const auto r = Rule::vjp(x[0], g_state, x[NS + 1], state, x[2 * NS + 2], c);
    if constexpr (WithCoef) {
      for (size_t j = 0; j < NC; ++j) sums[j] += r.coef[j];
    }
    std::array<opmath_t, NS + 2> y;
    y[0] = r.g;
    for (size_t k = 0; k < NS; ++k) y[1 + k] = r.states[k];
    y[NS + 1] = r.p;
    return y;
  });
  if constexpr (WithCoef) block_sum(sums, coef_partials + (b.first_block + blockIdx.x) * NC);
}

// Sums the blocks' partial sums (in a fixed order) and chains them to the
// hyperparameters. One block.
template <class Rule>
__global__ void __launch_bounds__(kChainThreads)
    chain_kernel(const double* coef_partials, int64_t blocks, const Hyper<Rule> h,
                 const std::array<ScalarOut, Rule::hyperparameters.size()> grad_hyper) {
  constexpr size_t NC = Rule::num_coef;
  __shared__ double scratch[kChainThreads];
  std::array<double, NC> coef_grad;
  for (size_t j = 0; j < NC; ++j) {
    double s = 0;
    for (int64_t k = threadIdx.x; k < blocks; k += kChainThreads) s += coef_partials[k * NC + j];
    scratch[threadIdx.x] = s;
    __syncthreads();
    for (int width = kChainThreads / 2; width > 0; width /= 2) {
      if (threadIdx.x < width) scratch[threadIdx.x] += scratch[threadIdx.x + width];
      __syncthreads();
    }
    coef_grad[j] = scratch[0];
    __syncthreads();  // before scratch is written again
  }
  if (threadIdx.x == 0) {
    const auto g = rules::chain_to_hyper<Rule>(coef_grad, h.load_values(), load(h.step), h.options);
    for (size_t i = 0; i < g.size(); ++i) {
      if (grad_hyper[i].ptr != nullptr) store(grad_hyper[i], g[i]);
    }
  }
}

// --- host side ------------------------------------------------------------------

// A tensor on the CPU is read here (no synchronisation); one on the GPU there.
// `keep` holds converted copies until the kernels are queued.
Scalar make_scalar(const at::Tensor& t, std::vector<at::Tensor>& keep) {
  if (t.is_cpu()) return {nullptr, t.item<double>(), at::kDouble};
  switch (t.scalar_type()) {
    case at::kDouble:
    case at::kFloat:
    case at::kHalf:
    case at::kBFloat16:
    case at::kLong:
    case at::kInt:
      return {t.const_data_ptr(), 0, t.scalar_type()};
    default:
      keep.push_back(t.to(at::kDouble));
      return {keep.back().const_data_ptr(), 0, at::kDouble};
  }
}

template <class Rule>
Hyper<Rule> make_hyper(const at::Tensor& step, at::TensorList hyper,
                       const typename Rule::Options& options, std::vector<at::Tensor>& keep) {
  Hyper<Rule> h{};
  for (size_t i = 0; i < h.values.size(); ++i) h.values[i] = make_scalar(hyper[i], keep);
  h.step = make_scalar(step, keep);
  h.options = options;
  return h;
}

const void* data(at::TensorList list, size_t i) {
  return list.empty() || !list[i].defined() ? nullptr : list[i].const_data_ptr();
}
void* mutable_data(at::TensorList list, size_t i) {
  return list.empty() ? nullptr : list[i].mutable_data_ptr();
}

// The distinct dtypes of `tensors`, in order.
std::vector<at::ScalarType> dtypes(at::TensorList tensors) {
  std::vector<at::ScalarType> out;
  for (const auto& t : tensors) {
    if (std::find(out.begin(), out.end(), t.scalar_type()) == out.end()) {
      out.push_back(t.scalar_type());
    }
  }
  return out;
}

int64_t num_chunks(int64_t numel) { return (numel + kChunkSize - 1) / kChunkSize; }

// Calls launch(batch, number of blocks) for each launch's worth of the chunks
// of the tensors i with like[i] of type `dtype`; `blocks_done` counts the
// blocks of every launch so far.
template <size_t NIn, size_t NOut, class Launch>
void for_each_batch(at::TensorList like, at::ScalarType dtype,
                    const std::array<at::TensorList, NIn>& in,
                    const std::array<at::TensorList, NOut>& out, int64_t& blocks_done,
                    const Launch& launch) {
  using B = Batch<NIn, NOut>;
  B b{};
  int tensors = 0, blocks = 0;
  const auto flush = [&] {
    if (blocks > 0) {
      b.first_block = blocks_done;
      launch(b, blocks);
      blocks_done += blocks;
    }
    tensors = blocks = 0;
  };
  for (size_t i = 0; i < like.size(); ++i) {
    if (like[i].scalar_type() != dtype) continue;
    const int64_t chunks = num_chunks(like[i].numel());
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      if (chunk == 0 || tensors == 0) {  // the tensor enters this launch
        if (tensors == B::kMaxTensors) flush();
        for (size_t a = 0; a < NIn; ++a) b.in[a][tensors] = data(in[a], i);
        for (size_t a = 0; a < NOut; ++a) b.out[a][tensors] = mutable_data(out[a], i);
        b.numel[tensors] = like[i].numel();
        ++tensors;
      }
      b.block_tensor[blocks] = static_cast<uint8_t>(tensors - 1);
      b.block_chunk[blocks] = static_cast<int32_t>(chunk);
      if (++blocks == kMaxBlocks) flush();
    }
  }
  flush();
}

#define UNROLLOPT_DISPATCH_FLOATING(TYPE, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, "unrollopt", __VA_ARGS__)

}  // namespace

template <class Rule>
void forward(const Lists<Rule>& in, at::TensorList update_out, const StateLists<Rule>& states_out,
             bool add_to_param, const at::Tensor& step, at::TensorList hyper,
             const typename Rule::Options& options) {
  constexpr size_t NS = Rule::states.size();
  if (in.grads.empty()) return;
  const c10::cuda::CUDAGuard guard(in.grads[0].device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> keep;
  const Hyper<Rule> h = make_hyper<Rule>(step, hyper, options, keep);
  std::array<at::TensorList, NS + 2> ins;
  std::array<at::TensorList, NS + 1> outs;
  ins[0] = in.grads;
  outs[0] = update_out;
  for (size_t k = 0; k < NS; ++k) {
    ins[1 + k] = in.states[k];
    outs[1 + k] = states_out[k];
  }
  ins[NS + 1] = in.params;
  int64_t blocks_done = 0;
  for (const at::ScalarType dtype : dtypes(in.grads)) {
    UNROLLOPT_DISPATCH_FLOATING(dtype, [&] {
      for_each_batch(in.grads, dtype, ins, outs, blocks_done, [&](const auto& b, int blocks) {
        static_assert(sizeof(b) + sizeof(h) + sizeof(bool) <= kParamBytes);
        forward_kernel<Rule, scalar_t><<<blocks, kThreads, 0, stream>>>(b, h, add_to_param);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
}

template <class Rule>
void backward(at::TensorList grad_update, const StateLists<Rule>& grad_states,
              const Lists<Rule>& in, const Lists<Rule>& out, const at::Tensor& step,
              at::TensorList hyper, const typename Rule::Options& options,
              at::TensorList grad_hyper) {
  constexpr size_t NS = Rule::states.size();
  constexpr size_t NH = Rule::hyperparameters.size();
  constexpr size_t NC = Rule::num_coef;
  std::optional<at::Device> device;
  std::array<ScalarOut, NH> h_out{};
  for (size_t i = 0; i < NH; ++i) {
    if (!grad_hyper[i].defined()) continue;
    TORCH_INTERNAL_ASSERT(grad_hyper[i].is_cuda() && grad_hyper[i].dim() == 0 &&
                          at::isFloatingType(grad_hyper[i].scalar_type()));
    h_out[i] = {grad_hyper[i].mutable_data_ptr(), grad_hyper[i].scalar_type()};
    device = grad_hyper[i].device();
  }
  const bool with_coef = device.has_value();
  if (!in.grads.empty()) device = in.grads[0].device();
  if (!device) return;
  const c10::cuda::CUDAGuard guard(*device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> keep;
  const Hyper<Rule> h = make_hyper<Rule>(step, hyper, options, keep);
  std::array<at::TensorList, 2 * NS + 3> ins;
  std::array<at::TensorList, NS + 2> outs;
  ins[0] = grad_update;
  ins[NS + 1] = in.grads;
  outs[0] = out.grads;
  for (size_t k = 0; k < NS; ++k) {
    ins[1 + k] = grad_states[k];
    ins[NS + 2 + k] = in.states[k];
    outs[1 + k] = out.states[k];
  }
  ins[2 * NS + 2] = in.params;
  outs[NS + 1] = out.params;
  // One row of coefficient cotangents per block, summed by chain_kernel.
  int64_t total_blocks = 0;
  for (const auto& g : in.grads) total_blocks += num_chunks(g.numel());
  at::Tensor partials;
  if (with_coef && total_blocks > 0) {
    partials = at::empty({total_blocks, static_cast<int64_t>(NC)},
                         at::TensorOptions().dtype(at::kDouble).device(*device));
  }
  double* const partials_ptr = partials.defined() ? partials.mutable_data_ptr<double>() : nullptr;
  int64_t blocks_done = 0;
  for (const at::ScalarType dtype : dtypes(in.grads)) {
    UNROLLOPT_DISPATCH_FLOATING(dtype, [&] {
      for_each_batch(in.grads, dtype, ins, outs, blocks_done, [&](const auto& b, int blocks) {
        static_assert(sizeof(b) + sizeof(h) + sizeof(double*) <= kParamBytes);
        if (with_coef) {
          backward_kernel<Rule, scalar_t, true>
              <<<blocks, kThreads, 0, stream>>>(b, h, partials_ptr);
        } else {
          backward_kernel<Rule, scalar_t, false><<<blocks, kThreads, 0, stream>>>(b, h, nullptr);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  TORCH_INTERNAL_ASSERT(blocks_done == total_blocks);
  if (with_coef) {
    chain_kernel<Rule><<<1, kChainThreads, 0, stream>>>(partials_ptr, total_blocks, h, h_out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

#define UNROLLOPT_INSTANTIATE(Rule)                                                              \
  template void forward<Rule>(const Lists<Rule>&, at::TensorList, const StateLists<Rule>&, bool, \
                              const at::Tensor&, at::TensorList, const typename Rule::Options&); \
  template void backward<Rule>(at::TensorList, const StateLists<Rule>&, const Lists<Rule>&,      \
                               const Lists<Rule>&, const at::Tensor&, at::TensorList,            \
                               const typename Rule::Options&, at::TensorList);
UNROLLOPT_FOR_EACH_RULE(UNROLLOPT_INSTANTIATE)
#undef UNROLLOPT_INSTANTIATE

}  // namespace unrollopt::cuda
