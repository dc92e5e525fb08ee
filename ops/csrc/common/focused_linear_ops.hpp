// Copyright (c) mmlinattn contributors. All rights reserved.
// Device-agnostic entry point of the normalised focused linear attention of
// FLatten (Han et al., ICCV 2023) for h heads of d = C / h channels:
//
//   kv_h   = phi(k)_h^T v_h / n,            mean_h = mean_j phi(k_j)_h,
//   z_i,h  = phi(q_i)_h . mean_h + 1e-6,    out_i,h = phi(q_i)_h kv_h / z_i,h
//
// with phi the focusing function of focusing_ops.hpp over all C channels of
// a row. q (B, N, C), k and v (B, n, C) with unit channel stride (any row and
// batch strides), scale (C,) contiguous, n >= 1. Returns out (B, N, C), kv
// (B, h, d, d + 1) with mean_h as its last column, and z (B, h, N, 1): the
// tensors the backward keeps. phi(k) and phi(q) are computed per block of
// rows in cache and never written out. The key sums are taken per block of
// focused_linear_block_rows rows (a fixed partition by C and d) and the
// blocks are added in order, so the result does not depend on the threads.
// Float and double; sums accumulate in the input type. C >= 1, n >= 1.
//
// The backward takes the upstream gradient g (B, N, C) and the forward's
// inputs, kv and z, recomputes phi(q) and phi(k) per block in cache and
// applies the closed-form gradients, per head with G = g / z:
//
//   u = G KV^T,  gz = -(phi(q) . u) / z,  g_phi(q) = u + gz mean,
//   g_KV = phi(q)^T G,  g_mean = sum_i gz_i phi(q_i),
//   g_v = phi(k) g_KV / n,  g_phi(k) = v g_KV^T / n + g_mean / n,
//
// then the focusing backward of g_phi(q) and g_phi(k). It returns grad_q,
// grad_k, grad_v and, with with_scale, the scale gradient as (blocks, C)
// partials of the fixed query and key blocks (their sum is the gradient).
#ifndef MMLINATTN_FOCUSED_LINEAR_OPS_HPP
#define MMLINATTN_FOCUSED_LINEAR_OPS_HPP

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

constexpr double kFocusedLinearNormaliserEps = 1e-6;

// Rows per block of queries or keys: ~16 K elements of a (rows, C) block, a
// multiple of 4 within [16, 256], and at least ld (d padded to whole
// vectors) so that the (C, ld) partial products a block adds up (the
// forward's key blocks, the backward's query blocks) are no larger than its
// rows. C >= 1.
inline int64_t focused_linear_block_rows(int64_t C, int64_t ld) {
  return std::max(
      std::min<int64_t>(256, std::max<int64_t>(16, 16384 / C / 4 * 4)), ld);
}

std::vector<at::Tensor> focused_linear_forward_impl(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& scale, double p, int64_t heads);

// {grad_q, grad_k, grad_v, scale partials (blocks, C) or undefined}; kv and
// z contiguous, g with unit channel stride.
std::vector<at::Tensor> focused_linear_backward_impl(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& scale, const at::Tensor& kv,
    const at::Tensor& z, double p, int64_t heads, bool with_scale);

#endif  // MMLINATTN_FOCUSED_LINEAR_OPS_HPP
