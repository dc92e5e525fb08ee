// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernel of the depthwise-conv weight gradient (see
// depthwise_conv_ops.hpp), one vector of channels at a time over a block of
// output rows. A 5x5 kernel (FLatten's DWC) keeps its 25 tap sums in
// registers while the block's channels-last pixels stream through, each
// grad vector loaded once for all taps; other kernels sum one tap at a
// time. oneDNN's 5x5 weight gradient runs ~10x slower than its own forward
// (measured in mmlinattn/ops/depthwise_conv.py). Compiled for AVX-512,
// AVX2 and baseline, picked at load time.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "depthwise_conv_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

struct Geometry {
  int64_t B, C, H, W, Ho, Wo, kh, kw, ph, pw;
  int64_t g_sb, g_sh, g_sw, x_sb, x_sh, x_sw;  // element strides
};

// sum over the block's rows r0 .. r0 + rn and all columns of
// g[., c0 + l] * x[., c0 + l] for tap (i, j), lanes l < n (n <= L)
template <typename T, int64_t L>
__attribute__((always_inline)) inline void tap_sums(
    const Geometry& s, const T* g, const T* x, int64_t r0, int64_t rn,
    int64_t c0, int64_t n, int64_t i, int64_t j, T* out) {
  T acc[L] = {};
  const int64_t lo = std::max<int64_t>(0, s.pw - j);
  const int64_t hi = std::min<int64_t>(s.Wo, s.W + s.pw - j);
  for (int64_t r = r0; r < r0 + rn; ++r) {
    const int64_t b = r / s.Ho, y = r % s.Ho, yi = y + i - s.ph;
    if (yi < 0 || yi >= s.H) continue;
    const T* gr = g + b * s.g_sb + y * s.g_sh + c0;
    const T* xr = x + b * s.x_sb + yi * s.x_sh + (j - s.pw) * s.x_sw + c0;
    if (n == L) {
      for (int64_t w = lo; w < hi; ++w) {
        const T* gw = gr + w * s.g_sw;
        const T* xw = xr + w * s.x_sw;
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) acc[l] += gw[l] * xw[l];
      }
    } else {
      for (int64_t w = lo; w < hi; ++w) {
        const T* gw = gr + w * s.g_sw;
        const T* xw = xr + w * s.x_sw;
#pragma omp simd
        for (int64_t l = 0; l < n; ++l) acc[l] += gw[l] * xw[l];
      }
    }
  }
  for (int64_t l = 0; l < n; ++l) out[l] = acc[l];
}

// The same sums for a K x K kernel and a full vector of lanes: one pass
// over the block's pixels with the K * K sums in registers, each grad
// vector loaded once for all taps.
template <typename T, int64_t L, int64_t K>
__attribute__((always_inline)) inline void all_tap_sums(
    const Geometry& s, const T* g, const T* x, int64_t r0, int64_t rn,
    int64_t c0, T* part) {
  T acc[K * K][L] = {};
  for (int64_t r = r0; r < r0 + rn; ++r) {
    const int64_t b = r / s.Ho, y = r % s.Ho;
    const T* xr[K];
    bool row_in[K];
#pragma GCC unroll 8
    for (int64_t i = 0; i < K; ++i) {
      const int64_t yi = y + i - s.ph;
      row_in[i] = yi >= 0 && yi < s.H;
      xr[i] = x + b * s.x_sb + (row_in[i] ? yi : 0) * s.x_sh + c0;
    }
    const T* gr = g + b * s.g_sb + y * s.g_sh + c0;
    for (int64_t w = 0; w < s.Wo; ++w) {
      const T* gv = gr + w * s.g_sw;
      const bool inside = w >= s.pw && w + K - 1 - s.pw < s.W;
#pragma GCC unroll 8
      for (int64_t i = 0; i < K; ++i) {
        if (!row_in[i]) continue;
#pragma GCC unroll 8
        for (int64_t j = 0; j < K; ++j) {
          const int64_t xi = w + j - s.pw;
          if (!inside && (xi < 0 || xi >= s.W)) continue;
          const T* xv = xr[i] + xi * s.x_sw;
#pragma omp simd
          for (int64_t l = 0; l < L; ++l) acc[i * K + j][l] += gv[l] * xv[l];
        }
      }
    }
  }
  for (int64_t t = 0; t < K * K; ++t)
    for (int64_t l = 0; l < L; ++l) part[t * s.C + c0 + l] = acc[t][l];
}

// partials (kh * kw, C) of the output rows r0 .. r0 + rn
template <typename T>
MMLINATTN_SIMD_CLONES void block_sums(const Geometry& s, const T* g,
                                      const T* x, int64_t r0, int64_t rn,
                                      T* part) {
  constexpr int64_t L = 64 / sizeof(T);  // one 512-bit vector
  for (int64_t c0 = 0; c0 < s.C; c0 += L) {
    const int64_t n = std::min(L, s.C - c0);
    if (n == L && s.kh == 5 && s.kw == 5) {
      all_tap_sums<T, L, 5>(s, g, x, r0, rn, c0, part);
    } else {
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j)
          tap_sums<T, L>(s, g, x, r0, rn, c0, n, i, j,
                         part + (i * s.kw + j) * s.C + c0);
    }
  }
}

at::Tensor depthwise_conv2d_weight_grad_cpu(const at::Tensor& grad,
                                            const at::Tensor& input,
                                            int64_t kernel_h,
                                            int64_t kernel_w, int64_t pad_h,
                                            int64_t pad_w) {
  const Geometry s{input.size(0),  input.size(1), input.size(2),
                   input.size(3),  grad.size(2),  grad.size(3),
                   kernel_h,       kernel_w,      pad_h,
                   pad_w,          grad.stride(0), grad.stride(2),
                   grad.stride(3), input.stride(0), input.stride(2),
                   input.stride(3)};
  const int64_t rows = s.B * s.Ho;
  const int64_t blocks =
      (rows + kDepthwiseRowsPerBlock - 1) / kDepthwiseRowsPerBlock;
  auto partials =
      at::empty({blocks, kernel_h * kernel_w, s.C}, input.options());
  AT_DISPATCH_FLOATING_TYPES(
      input.scalar_type(), "depthwise_conv2d_weight_grad_cpu", [&] {
        const scalar_t* gp = grad.data_ptr<scalar_t>();
        const scalar_t* xp = input.data_ptr<scalar_t>();
        scalar_t* pp = partials.data_ptr<scalar_t>();
        at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t blk = begin; blk < end; ++blk) {
            const int64_t r0 = blk * kDepthwiseRowsPerBlock;
            block_sums<scalar_t>(
                s, gp, xp, r0, std::min(kDepthwiseRowsPerBlock, rows - r0),
                pp + blk * kernel_h * kernel_w * s.C);
          }
        });
      });
  return partials;
}

}  // namespace

REGISTER_DEVICE_IMPL(depthwise_conv2d_weight_grad_impl, CPU,
                     depthwise_conv2d_weight_grad_cpu);
