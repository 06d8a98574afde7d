#pragma once
// Multi-tensor apply on the CPU: one call covers every tensor of a parameter
// list. The tensors are cut into chunks that `at::parallel_for` spreads over the
// intra-op threads (honouring torch.set_num_threads); each chunk runs a
// vectorised loop in the type the math needs (float for half and bfloat16).

#include <algorithm>
#include <array>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include "unrollopt/rules/math_ops.h"

#ifndef CPU_CAPABILITY
#error "multi_tensor.h is for the code compiled per CPU capability (cpu/kernels.cpp)"
#endif

// In the capability's own namespace: the same inline function compiled for AVX2
// and for the portable kernels must not become one symbol (the linker would keep
// either copy, possibly one with instructions the CPU lacks).
namespace unrollopt::cpu::CPU_CAPABILITY {

struct Chunk {
  int64_t tensor, begin, end;
};

// Elements per chunk, and the smallest call worth more than one thread.
inline constexpr int64_t kChunkSize = 16384;
inline constexpr int64_t kMinParallelSize = 65536;

inline std::vector<Chunk> make_chunks(at::TensorList tensors) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < static_cast<int64_t>(tensors.size()); ++t) {
    const int64_t n = tensors[t].numel();
    for (int64_t b = 0; b < n; b += kChunkSize)
      chunks.push_back({t, b, std::min(n, b + kChunkSize)});
  }
  return chunks;
}

// Runs f(chunk, chunk_index) for every chunk, in parallel for large calls: in
// tasks of about kMinParallelSize elements (chunks of small tensors are small),
// and on one thread below that, where waking the pool costs more than it saves.
template <class F>
void for_each_chunk(const std::vector<Chunk>& chunks, const F& f) {
  const auto n = static_cast<int64_t>(chunks.size());
  int64_t elements = 0;
  for (const Chunk& c : chunks) elements += c.end - c.begin;
  const int64_t grain = std::max<int64_t>(1, kMinParallelSize * n / std::max<int64_t>(1, elements));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) f(chunks[c], c);
  });
}

template <class scalar_t>
using OpVec = at::vec::Vectorized<at::opmath_type<scalar_t>>;

// The lanes of a vector that hold elements: all of them (the main loop), or the
// first k < size() (a tail, whose other lanes hold zeros).
struct AllLanes {};

template <class Vec>
Vec valid_lanes(const Vec& x, AllLanes) {
  return x;
}
// x in the first k lanes, 0 in the rest (terms of zeros need not vanish).
template <class Vec>
Vec valid_lanes(const Vec& x, int64_t k) {
  return Vec::set(Vec(0), x, k);
}

// Loads and stores through a buffer of the math type: a tail, or a storage type
// that differs from it (half and bfloat16).
template <class scalar_t>
OpVec<scalar_t> load(const scalar_t* p, int64_t k) {
  using opmath_t = at::opmath_type<scalar_t>;
  opmath_t buf[OpVec<scalar_t>::size()] = {};
  for (int64_t j = 0; j < k; ++j) buf[j] = static_cast<opmath_t>(p[j]);
  return OpVec<scalar_t>::loadu(buf);
}

template <class scalar_t>
void store(const OpVec<scalar_t>& x, scalar_t* p, int64_t k) {
  at::opmath_type<scalar_t> buf[OpVec<scalar_t>::size()];
  x.store(buf);
  for (int64_t j = 0; j < k; ++j) p[j] = static_cast<scalar_t>(buf[j]);
}

template <class scalar_t>
OpVec<scalar_t> load(const scalar_t* p, AllLanes) {
  using Vec = OpVec<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    return Vec::loadu(p);
  } else {
    return load(p, int64_t{Vec::size()});
  }
}
template <class scalar_t>
void store(const OpVec<scalar_t>& x, scalar_t* p, AllLanes) {
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    x.store(p);
  } else {
    store(x, p, int64_t{OpVec<scalar_t>::size()});
  }
}
template <class scalar_t, size_t NIn, size_t NOut, class F, class Lanes>
UNROLLOPT_INLINE void map_at(const std::array<const scalar_t*, NIn>& in,
                             const std::array<scalar_t*, NOut>& out, int64_t i, Lanes lanes,
                             const F& f) {
  std::array<OpVec<scalar_t>, NIn> x;
  for (size_t a = 0; a < NIn; ++a) x[a] = load(in[a] + i, lanes);
  const std::array<OpVec<scalar_t>, NOut> y = f(x, lanes);
  for (size_t b = 0; b < NOut; ++b) {
    if (out[b]) store(y[b], out[b] + i, lanes);
  }
}

// out[b][i] = f(in[0][i], ..., in[NIn-1][i])[b] for i in [0, n), a vector at a
// time: full vectors first (f gets AllLanes), then at most one tail (f gets the
// number of valid lanes). Null outputs are not stored.
// Inlined into the kernel, with local copies of the pointers: vector stores may
// alias anything, so pointers and coefficients reached through references would
// be reloaded from memory after every store.
template <class scalar_t, size_t NIn, size_t NOut, class F>
UNROLLOPT_INLINE void map_vectorized(const std::array<const scalar_t*, NIn>& in_ptrs,
                                     const std::array<scalar_t*, NOut>& out_ptrs, int64_t n,
                                     const F& f) {
  constexpr int64_t W = OpVec<scalar_t>::size();
  const std::array<const scalar_t*, NIn> in = in_ptrs;
  const std::array<scalar_t*, NOut> out = out_ptrs;
  const int64_t full = n - n % W;
  for (int64_t i = 0; i < full; i += W) map_at(in, out, i, AllLanes{}, f);
  if (full < n) map_at(in, out, full, n - full, f);
}

// Zeros to read in place of a missing input (an empty list or an undefined
// tensor): one chunk long.
template <class scalar_t>
const scalar_t* zeros() {
  alignas(64) static const scalar_t buffer[kChunkSize] = {};
  return buffer;
}

// Pointer to the start of a chunk of list[chunk.tensor], or to zeros for an
// empty list or an undefined tensor.
template <class scalar_t>
const scalar_t* in_ptr(at::TensorList list, const Chunk& c) {
  if (list.empty() || !list[c.tensor].defined()) return zeros<scalar_t>();
  return list[c.tensor].const_data_ptr<scalar_t>() + c.begin;
}
// Pointer to the start of a chunk of list[chunk.tensor], or null for an empty
// list (nothing is stored).
template <class scalar_t>
scalar_t* out_ptr(at::TensorList list, const Chunk& c) {
  if (list.empty()) return nullptr;
  return list[c.tensor].mutable_data_ptr<scalar_t>() + c.begin;
}

}  // namespace unrollopt::cpu::CPU_CAPABILITY
