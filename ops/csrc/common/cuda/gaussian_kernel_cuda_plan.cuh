// Copyright (c) mmlinattn contributors. All rights reserved.
// Launch plan of the CUDA Gaussian-kernel ops: grid and block sizes, tiles,
// row blocks, feature chunks, column splits and the layout of their partial
// sums, the D/E instantiation and the accumulation type. Host code without
// torch, shared by the real launcher (ops/csrc/pytorch/cuda/
// gaussian_kernel_cuda.cu, which only adds allocation and the <<<...>>>
// call) and the CPU emulation of the tests (tests/test_ops/cuda_emulation/),
// so the emulated launches are the ones the GPU runs. dim3 comes from the
// CUDA runtime (nvcc includes it) or from the emulation header.
#ifndef MMLINATTN_GAUSSIAN_KERNEL_CUDA_PLAN_CUH
#define MMLINATTN_GAUSSIAN_KERNEL_CUDA_PLAN_CUH

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "gaussian_kernel_cuda_kernel.cuh"

namespace mmlinattn {
namespace cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The type the kernels read and accumulate in for inputs of type S: double
// for double, float for float, half and bfloat16 (converted beforehand).
template <typename S>
using acc_type_t =
    std::conditional_t<std::is_same_v<S, double>, double, float>;

constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
constexpr int64_t kMaxGridY = 65535;

// ---------------------------------------------------------------------------
// sqdist / Gaussian kernel: one block per 64 x 64 output tile, the tiles of
// all batch*heads flattened into grid.x (column tile fastest).
// ---------------------------------------------------------------------------
struct SqdistPlan {
  int64_t batch, n, m;
  int d;
  int64_t row_tiles, col_tiles, blocks;

  bool fits_grid() const { return blocks <= kMaxGridX; }
  dim3 grid() const { return dim3(static_cast<unsigned>(blocks)); }
  dim3 block() const { return dim3(kSqdistThreads); }
};

inline SqdistPlan plan_sqdist(int64_t batch, int64_t n, int64_t m, int d) {
  const int64_t row_tiles = ceil_div(n, kSqdistTile);
  const int64_t col_tiles = ceil_div(m, kSqdistTile);
  return {batch, n, m, d, row_tiles, col_tiles,
          batch * row_tiles * col_tiles};
}

// q (batch, n, d), k (batch, m, d) in T; out (batch, n, m) in out_t.
// launch(kernel, grid, block, args...) performs kernel<<<grid, block>>>.
template <typename T, typename out_t, typename Launch>
void launch_sqdist(const SqdistPlan& plan, bool apply_exp, const T* q,
                   const T* k, out_t* out, Launch&& launch) {
  auto kernel = apply_exp ? gaussian_sqdist_cuda_kernel<T, out_t, true>
                          : gaussian_sqdist_cuda_kernel<T, out_t, false>;
  launch(kernel, plan.grid(), plan.block(), q, k, out, plan.n, plan.m,
         plan.d, plan.row_tiles, plan.col_tiles);
}

// ---------------------------------------------------------------------------
// Fused products (gaussian_kernel_matmul_cuda_kernel): 128 owner rows per
// block; grid.x = batch*heads x row blocks x feature chunks (chunks of E
// features, forward only); grid.y = column splits, chosen so that about
// eight blocks per SM are in flight, every split covering at least four
// shared-memory tiles. Split s writes partial sums to out + s *
// split_stride (and out_kb + s * kb_split_stride); the result is their sum
// over s.
// ---------------------------------------------------------------------------

// Whether the fused kernels cover d and e (otherwise the launcher falls back
// to the chunked composite): the owner row p_r, and in the backward the
// feature row a_r, live in registers of at most 64 values.
inline bool fused_supported(FusedMode mode, int64_t d, int64_t e) {
  return d <= 64 && (mode == kForward || e <= 64);
}

struct FusedPlan {
  FusedMode mode;
  int64_t batch, rows, cols;
  int d, e;
  int kernel_d, kernel_e;  // the D, E template arguments (32 or 64)
  int64_t row_blocks;
  int e_chunks;
  int64_t base_blocks;  // grid.x
  int64_t splits;       // grid.y
  int64_t cols_per_split;

  // Width of one row of out: e (forward) or d (gradient).
  int64_t out_width() const { return mode == kForward ? e : d; }
  // Shapes of the partial sums out and out_kb: (splits, batch, rows, width).
  std::array<int64_t, 4> out_shape() const {
    return {splits, batch, rows, out_width()};
  }
  std::array<int64_t, 4> kb_shape() const { return {splits, batch, rows, e}; }
  int64_t split_stride() const { return batch * rows * out_width(); }
  int64_t kb_split_stride() const {
    return mode == kGradWithKb ? batch * rows * e : 0;
  }
  bool fits_grid() const {
    return base_blocks <= kMaxGridX && splits <= kMaxGridY;
  }
  dim3 grid() const {
    return dim3(static_cast<unsigned>(base_blocks),
                static_cast<unsigned>(splits));
  }
  dim3 block() const { return dim3(kOwnerThreads); }
};

// rows, cols >= 1, 1 <= d <= 64, e >= 1 (e <= 64 unless forward); sms: the
// number of multiprocessors of the device.
template <typename T>
FusedPlan plan_fused(FusedMode mode, int64_t batch, int64_t rows,
                     int64_t cols, int d, int e, int sms) {
  constexpr int kTileCols = FusedTileCols<T>::value;
  FusedPlan plan{};
  plan.mode = mode;
  plan.batch = batch;
  plan.rows = rows;
  plan.cols = cols;
  plan.d = d;
  plan.e = e;
  plan.kernel_d = d <= 32 ? 32 : 64;
  plan.kernel_e = e <= 32 ? 32 : 64;  // forward: e > 64 in chunks of 64
  plan.row_blocks = ceil_div(rows, kOwnerThreads);
  plan.e_chunks =
      mode == kForward ? static_cast<int>(ceil_div(e, plan.kernel_e)) : 1;
  plan.base_blocks = batch * plan.row_blocks * plan.e_chunks;
  const int64_t wanted = 8 * static_cast<int64_t>(sms);
  int64_t n = 1;
  if (plan.base_blocks < wanted)
    n = std::min(ceil_div(wanted, plan.base_blocks),
                 ceil_div(cols, 4 * kTileCols));
  n = std::max<int64_t>(1, std::min(n, kMaxGridY));
  plan.cols_per_split = ceil_div(ceil_div(cols, n), kTileCols) * kTileCols;
  plan.splits = ceil_div(cols, plan.cols_per_split);
  return plan;
}

template <typename T, int D, int E, typename Launch>
void launch_fused_instance(const FusedPlan& plan, const T* p, const T* o,
                           const T* f, const T* a, T* out, T* out_kb,
                           Launch&& launch) {
  const int64_t split_stride = plan.split_stride();
  const int64_t kb_split_stride = plan.kb_split_stride();
  auto args = [&](auto kernel) {
    launch(kernel, plan.grid(), plan.block(), p, o, f, a, out, out_kb,
           plan.rows, plan.cols, plan.d, plan.e, plan.row_blocks,
           plan.e_chunks, plan.cols_per_split, split_stride,
           kb_split_stride);
  };
  switch (plan.mode) {
    case kForward:
      args(gaussian_kernel_matmul_cuda_kernel<T, D, E, kForward>);
      break;
    case kGrad:
      args(gaussian_kernel_matmul_cuda_kernel<T, D, E, kGrad>);
      break;
    case kGradWithKb:
      args(gaussian_kernel_matmul_cuda_kernel<T, D, E, kGradWithKb>);
      break;
  }
}

// p (batch, rows, d), o (batch, cols, d), f (batch, cols, e), a (batch,
// rows, e; gradient modes, else unused); out / out_kb: the partial sums of
// plan.out_shape() / plan.kb_shape() (out_kb only for kGradWithKb).
template <typename T, typename Launch>
void launch_fused(const FusedPlan& plan, const T* p, const T* o, const T* f,
                  const T* a, T* out, T* out_kb, Launch&& launch) {
  if (plan.kernel_d == 32 && plan.kernel_e == 32)
    launch_fused_instance<T, 32, 32>(plan, p, o, f, a, out, out_kb, launch);
  else if (plan.kernel_d == 32)
    launch_fused_instance<T, 32, 64>(plan, p, o, f, a, out, out_kb, launch);
  else if (plan.kernel_e == 32)
    launch_fused_instance<T, 64, 32>(plan, p, o, f, a, out, out_kb, launch);
  else
    launch_fused_instance<T, 64, 64>(plan, p, o, f, a, out, out_kb, launch);
}

}  // namespace cuda
}  // namespace mmlinattn

#endif  // MMLINATTN_GAUSSIAN_KERNEL_CUDA_PLAN_CUH
