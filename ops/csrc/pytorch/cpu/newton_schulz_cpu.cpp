// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernel of the Newton-Schulz steps (see newton_schulz_ops.hpp). SOFT
// iterates 20 times on (B * heads, 49, 49) stacks: two batched GEMM calls per
// step spend most of their time in dispatch and in streaming the stack
// through the caches. Here one thread runs all steps of a matrix on four
// cache-resident copies (A, V, V A, next V) whose rows are padded to whole
// vectors with zeros; the products are register tiles of 4 rows x up to 4
// vectors, each entry summed over k in order with one fused multiply-add per
// term.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_vector.hpp"
#include "newton_schulz_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

using mmlinattn::cpu::kLanes;
using mmlinattn::cpu::load;
using mmlinattn::cpu::store;
using mmlinattn::cpu::Vec;

constexpr int kTileRows = 4;
constexpr int kTileVectors = 4;

// Rows [i0, i0 + R) and vectors [j0, j0 + NV * lanes) of out = a b, or of
// out = 2 e - a b if Residual; m x m matrices with row stride ld.
template <typename T, int R, int NV, bool Residual>
__attribute__((always_inline)) inline void tile(const T* a, const T* b,
                                                const T* e, T* out, int64_t m,
                                                int64_t ld, int64_t i0,
                                                int64_t j0) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec<T>{};
  for (int64_t k = 0; k < m; ++k) {
    Vec<T> bk[NV];
    for (int v = 0; v < NV; ++v) bk[v] = load(b + k * ld + j0 + v * L);
    for (int r = 0; r < R; ++r) {
      const T a_rk = a[(i0 + r) * ld + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a_rk * bk[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    const int64_t at = (i0 + r) * ld + j0;
    for (int v = 0; v < NV; ++v) {
      if constexpr (Residual)
        store(out + at + v * L, T(2) * load(e + at + v * L) - acc[r][v]);
      else
        store(out + at + v * L, acc[r][v]);
    }
  }
}

template <typename T, int NV, bool Residual>
__attribute__((always_inline)) inline void column_block(
    const T* a, const T* b, const T* e, T* out, int64_t m, int64_t ld,
    int64_t j0) {
  int64_t i = 0;
  for (; i + kTileRows <= m; i += kTileRows)
    tile<T, kTileRows, NV, Residual>(a, b, e, out, m, ld, i, j0);
  for (; i < m; ++i) tile<T, 1, NV, Residual>(a, b, e, out, m, ld, i, j0);
}

template <typename T, bool Residual>
__attribute__((always_inline)) inline void product(const T* a, const T* b,
                                                   const T* e, T* out,
                                                   int64_t m, int64_t ld) {
  constexpr int64_t L = kLanes<T>;
  const int64_t vectors = ld / L;
  int64_t v = 0;
  for (; v + kTileVectors <= vectors; v += kTileVectors)
    column_block<T, kTileVectors, Residual>(a, b, e, out, m, ld, v * L);
  static_assert(kTileVectors == 4, "the remainder cases below");
  switch (vectors - v) {
    case 3:
      column_block<T, 3, Residual>(a, b, e, out, m, ld, v * L);
      break;
    case 2:
      column_block<T, 2, Residual>(a, b, e, out, m, ld, v * L);
      break;
    case 1:
      column_block<T, 1, Residual>(a, b, e, out, m, ld, v * L);
      break;
  }
}

// All num_iter steps of one matrix; work holds 4 m x ld matrices whose
// padding columns are zero (they stay zero: each product's padding columns
// are sums of zeros).
template <typename T>
MMLINATTN_SIMD_CLONES void iterate_matrix(const T* inv, const T* mat, T* out,
                                          int64_t m, int64_t ld,
                                          int64_t num_iter, T* work) {
  T* a = work;
  T* v = a + m * ld;
  T* va = v + m * ld;
  T* next = va + m * ld;
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(a + i * ld, mat + i * m, sizeof(T) * m);
    std::memcpy(v + i * ld, inv + i * m, sizeof(T) * m);
  }
  for (int64_t step = 0; step < num_iter; ++step) {
    product<T, false>(v, a, nullptr, va, m, ld);
    product<T, true>(va, v, v, next, m, ld);
    std::swap(v, next);
  }
  for (int64_t i = 0; i < m; ++i)
    std::memcpy(out + i * m, v + i * ld, sizeof(T) * m);
}

at::Tensor newton_schulz_steps_cpu(const at::Tensor& inv,
                                   const at::Tensor& mat, int64_t num_iter) {
  const int64_t batch = inv.size(0), m = inv.size(1);
  auto out = at::empty_like(inv);
  AT_DISPATCH_FLOATING_TYPES(inv.scalar_type(), "newton_schulz_steps_cpu", [&] {
    constexpr int64_t L = kLanes<scalar_t>;
    const int64_t ld = (m + L - 1) / L * L;
    const scalar_t* ip = inv.data_ptr<scalar_t>();
    const scalar_t* mp = mat.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work(4 * m * ld, scalar_t(0));
      for (int64_t b = begin; b < end; ++b)
        iterate_matrix<scalar_t>(ip + b * m * m, mp + b * m * m,
                                 op + b * m * m, m, ld, num_iter,
                                 work.data());
    });
  });
  return out;
}

}  // namespace

REGISTER_DEVICE_IMPL(newton_schulz_steps_impl, CPU, newton_schulz_steps_cpu);
