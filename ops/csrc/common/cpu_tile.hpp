// Copyright (c) mmlinattn contributors. All rights reserved.
// Register-tiled small products for the CPU kernels whose operands sit in
// cache: out = a b for an M x K matrix a with any row / k strides and a
// K x (nvec vectors) matrix b (row stride ldb, whole vectors per row), in
// tiles of 4 rows x up to 4 vectors. Each entry is summed over k in order
// with one fused multiply-add per term (the result does not depend on the
// tiling or the threads); the caller's store(i, v, acc) receives row i's
// v-th vector and writes it with its own epilogue.
#ifndef MMLINATTN_CPU_TILE_HPP
#define MMLINATTN_CPU_TILE_HPP

#include <cstdint>

#include "cpu_vector.hpp"

namespace mmlinattn {
namespace cpu {

constexpr int kTileRows = 4;
constexpr int kTileVectors = 4;

// Rows [i0, i0 + R), vectors [v0, v0 + NV).
template <typename T, int R, int NV, typename Store>
__attribute__((always_inline)) inline void tile(const T* a, int64_t a_row,
                                                int64_t a_k, const T* b,
                                                int64_t ldb, int64_t K,
                                                int64_t i0, int64_t v0,
                                                Store& store_vector) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = Vec<T>{};
  for (int64_t k = 0; k < K; ++k) {
    Vec<T> bk[NV];
    for (int v = 0; v < NV; ++v) bk[v] = load(b + k * ldb + (v0 + v) * L);
    for (int r = 0; r < R; ++r) {
      const T a_rk = a[(i0 + r) * a_row + k * a_k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a_rk * bk[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) store_vector(i0 + r, v0 + v, acc[r][v]);
}

template <typename T, int NV, typename Store>
__attribute__((always_inline)) inline void tile_column(
    const T* a, int64_t a_row, int64_t a_k, const T* b, int64_t ldb,
    int64_t M, int64_t K, int64_t v0, Store& store_vector) {
  int64_t i = 0;
  for (; i + kTileRows <= M; i += kTileRows)
    tile<T, kTileRows, NV>(a, a_row, a_k, b, ldb, K, i, v0, store_vector);
  for (; i < M; ++i)
    tile<T, 1, NV>(a, a_row, a_k, b, ldb, K, i, v0, store_vector);
}

// out[i, v] = sum_k a[i * a_row + k * a_k] b[k * ldb + v * lanes ...]
template <typename T, typename Store>
__attribute__((always_inline)) inline void tiled_product(
    const T* a, int64_t a_row, int64_t a_k, const T* b, int64_t ldb,
    int64_t M, int64_t K, int64_t nvec, Store store_vector) {
  int64_t v = 0;
  for (; v + kTileVectors <= nvec; v += kTileVectors)
    tile_column<T, kTileVectors>(a, a_row, a_k, b, ldb, M, K, v,
                                 store_vector);
  static_assert(kTileVectors == 4, "the remainder cases below");
  switch (nvec - v) {
    case 3:
      tile_column<T, 3>(a, a_row, a_k, b, ldb, M, K, v, store_vector);
      break;
    case 2:
      tile_column<T, 2>(a, a_row, a_k, b, ldb, M, K, v, store_vector);
      break;
    case 1:
      tile_column<T, 1>(a, a_row, a_k, b, ldb, M, K, v, store_vector);
      break;
  }
}

}  // namespace cpu
}  // namespace mmlinattn

#endif  // MMLINATTN_CPU_TILE_HPP
