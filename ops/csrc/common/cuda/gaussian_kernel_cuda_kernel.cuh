// Copyright (c) mmlinattn contributors. All rights reserved.
// CUDA kernels of the Gaussian-kernel ops of SOFT (Lu et al., NeurIPS 2021).
// Inputs are contiguous (B*h, L, C) arrays in the accumulation type T
// (float, or double for fp64); all offsets are 64-bit.
#ifndef MMLINATTN_GAUSSIAN_KERNEL_CUDA_KERNEL_CUH
#define MMLINATTN_GAUSSIAN_KERNEL_CUDA_KERNEL_CUH

#include <cstdint>

namespace mmlinattn {
namespace cuda {

__device__ __forceinline__ float gaussian_of(float dist) {
  return __expf(-0.5f * dist);
}

__device__ __forceinline__ double gaussian_of(double dist) {
  return exp(-0.5 * dist);
}

// ---------------------------------------------------------------------------
// Squared distances (optionally exp(-D / 2)): one block computes a 64 x 64
// output tile with 16 x 16 threads, 4 x 4 outputs each (rows ty + 16 i,
// columns tx + 16 j, so shared reads are broadcasts or conflict-free and the
// stores are coalesced); channels stream through shared memory 16 at a time,
// zero-padded so padding adds nothing to the distances.
// ---------------------------------------------------------------------------
constexpr int kSqdistTile = 64;
constexpr int kSqdistChannels = 16;
constexpr int kSqdistThreads = 256;

template <typename T, typename out_t, bool kApplyExp>
__global__ void __launch_bounds__(kSqdistThreads)
    gaussian_sqdist_cuda_kernel(const T* __restrict__ q,
                                const T* __restrict__ k,
                                out_t* __restrict__ out, int64_t n, int64_t m,
                                int d, int64_t row_tiles, int64_t col_tiles) {
  __shared__ T sq[kSqdistChannels][kSqdistTile + 1];
  __shared__ T sk[kSqdistChannels][kSqdistTile + 1];
  int64_t tile = blockIdx.x;
  const int64_t col_tile = tile % col_tiles;
  tile /= col_tiles;
  const int64_t row_tile = tile % row_tiles;
  const int64_t bh = tile / row_tiles;
  const int64_t n0 = row_tile * kSqdistTile, m0 = col_tile * kSqdistTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const T* q_bh = q + bh * n * d;
  const T* k_bh = k + bh * m * d;

  T acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);

  for (int c0 = 0; c0 < d; c0 += kSqdistChannels) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kSqdistTile * kSqdistChannels;
         idx += kSqdistThreads) {
      const int row = idx / kSqdistChannels, c = idx % kSqdistChannels;
      const int ch = c0 + c;
      sq[c][row] =
          (n0 + row < n && ch < d) ? q_bh[(n0 + row) * d + ch] : T(0);
      sk[c][row] =
          (m0 + row < m && ch < d) ? k_bh[(m0 + row) * d + ch] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kSqdistChannels; ++c) {
      T a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = sq[c][ty + 16 * i];
        b[i] = sk[c][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const T t = a[i] - b[j];
          acc[i][j] += t * t;
        }
    }
  }

  out_t* out_bh = out + bh * n * m;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = n0 + ty + 16 * i;
    if (row >= n) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = m0 + tx + 16 * j;
      if (col < m)
        out_bh[row * m + col] = static_cast<out_t>(
            kApplyExp ? gaussian_of(acc[i][j]) : acc[i][j]);
    }
  }
}

// ---------------------------------------------------------------------------
// Fused products, flash-attention style: every thread owns one row r of
// p (R, d) and keeps it, its accumulators and (backward) its feature row
// a_r in registers; the block streams the other point set o (C, d) and its
// features f (C, e) through shared memory in tiles, recomputes
// K_rc = exp(-|p_r - o_c|^2 / 2) on the fly and never stores it.
//
//   kForward:    out_r = sum_c K_rc f_c          (features e0 .. e0 + E)
//   kGrad:       s_rc = K_rc (a_r . f_c);
//                out_r = sum_c s_rc o_c - (sum_c s_rc) p_r
//   kGradWithKb: kGrad plus out_kb_r = sum_c K_rc f_c
//
// grid.x = (batch*heads) x (row blocks) x (feature chunks), flattened so
// that huge batch*heads fit; grid.y splits the columns when R is too small
// to fill the GPU; split s writes its partial sums to out + s * split
// stride, summed afterwards (deterministic, no atomics). D and E bound d
// and e at compile time; the tiles are zero-padded so padding adds nothing.
// ---------------------------------------------------------------------------
constexpr int kOwnerThreads = 128;

template <typename T>
struct FusedTileCols {
  static constexpr int value = 64;
};
template <>
struct FusedTileCols<double> {  // keeps double tiles within 48 KiB
  static constexpr int value = 32;
};

enum FusedMode { kForward = 0, kGrad = 1, kGradWithKb = 2 };

template <typename T, int D, int E, int kMode>
__global__ void __launch_bounds__(kOwnerThreads)
    gaussian_kernel_matmul_cuda_kernel(
        const T* __restrict__ p, const T* __restrict__ o,
        const T* __restrict__ f, const T* __restrict__ a,
        T* __restrict__ out, T* __restrict__ out_kb, int64_t rows,
        int64_t cols, int d, int e, int64_t row_blocks, int e_chunks,
        int64_t cols_per_split, int64_t split_stride,
        int64_t kb_split_stride) {
  constexpr int kCols = FusedTileCols<T>::value;
  constexpr bool kBackward = kMode != kForward;
  __shared__ __align__(16) T so[kCols][D];
  __shared__ __align__(16) T sf[kCols][E];

  int64_t block = blockIdx.x;
  const int e_chunk = static_cast<int>(block % e_chunks);
  block /= e_chunks;
  const int64_t row_block = block % row_blocks;
  const int64_t bh = block / row_blocks;
  const int e0 = e_chunk * E;
  const int64_t r = row_block * kOwnerThreads + threadIdx.x;
  const bool valid = r < rows;
  const int64_t split = blockIdx.y;
  const int64_t c_begin = split * cols_per_split;
  const int64_t c_end = min(cols, c_begin + cols_per_split);

  T pr[D];
#pragma unroll
  for (int c = 0; c < D; ++c)
    pr[c] = (valid && c < d) ? p[(bh * rows + r) * d + c] : T(0);
  T ar[kBackward ? E : 1];
  if constexpr (kBackward) {
#pragma unroll
    for (int i = 0; i < E; ++i)
      ar[i] = (valid && i < e) ? a[(bh * rows + r) * e + i] : T(0);
  }
  constexpr int kAcc = kBackward ? D : E;
  T acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = T(0);
  T kb[kMode == kGradWithKb ? E : 1];
#pragma unroll
  for (int i = 0; i < (kMode == kGradWithKb ? E : 1); ++i) kb[i] = T(0);
  T row_sum = T(0);

  const T* o_bh = o + bh * cols * d;
  const T* f_bh = f + bh * cols * e;
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kCols) {
    const int cn = static_cast<int>(min(static_cast<int64_t>(kCols),
                                        c_end - c0));
    __syncthreads();  // the previous tile is consumed
    for (int idx = threadIdx.x; idx < kCols * D; idx += kOwnerThreads) {
      const int j = idx / D, c = idx % D;
      so[j][c] = (j < cn && c < d) ? o_bh[(c0 + j) * d + c] : T(0);
    }
    for (int idx = threadIdx.x; idx < kCols * E; idx += kOwnerThreads) {
      const int j = idx / E, i = idx % E;
      sf[j][i] =
          (j < cn && e0 + i < e) ? f_bh[(c0 + j) * e + e0 + i] : T(0);
    }
    __syncthreads();
    if (!valid) continue;
    for (int j = 0; j < cn; ++j) {
      T dist = T(0);
#pragma unroll
      for (int c = 0; c < D; ++c) {
        const T t = pr[c] - so[j][c];
        dist += t * t;
      }
      const T kv = gaussian_of(dist);
      if constexpr (kMode == kForward) {
#pragma unroll
        for (int i = 0; i < E; ++i) acc[i] += kv * sf[j][i];
      } else {
        T dot = T(0);
#pragma unroll
        for (int i = 0; i < E; ++i) dot += ar[i] * sf[j][i];
        const T s = kv * dot;
        row_sum += s;
#pragma unroll
        for (int c = 0; c < D; ++c) acc[c] += s * so[j][c];
        if constexpr (kMode == kGradWithKb) {
#pragma unroll
          for (int i = 0; i < E; ++i) kb[i] += kv * sf[j][i];
        }
      }
    }
  }
  if (!valid) return;

  if constexpr (kMode == kForward) {
    T* dst = out + split * split_stride + (bh * rows + r) * e + e0;
#pragma unroll
    for (int i = 0; i < E; ++i)
      if (e0 + i < e) dst[i] = acc[i];
  } else {
    // Linear in the partial sums, so every split can apply its own part.
    T* dst = out + split * split_stride + (bh * rows + r) * d;
#pragma unroll
    for (int c = 0; c < D; ++c)
      if (c < d) dst[c] = acc[c] - row_sum * pr[c];
    if constexpr (kMode == kGradWithKb) {
      T* kb_dst = out_kb + split * kb_split_stride + (bh * rows + r) * e;
#pragma unroll
      for (int i = 0; i < E; ++i)
        if (i < e) kb_dst[i] = kb[i];
    }
  }
}

}  // namespace cuda
}  // namespace mmlinattn

#endif  // MMLINATTN_GAUSSIAN_KERNEL_CUDA_KERNEL_CUH
