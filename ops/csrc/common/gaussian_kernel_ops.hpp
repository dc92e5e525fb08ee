// Copyright (c) mmlinattn contributors. All rights reserved.
// Device-agnostic entry points of the Gaussian-kernel ops of SOFT (Lu et al.,
// NeurIPS 2021). Tensors are 3-D (B*h, L, C), contiguous, one dtype, one
// device (checked in gaussian_kernel.cpp before dispatch).
//
//   sqdist:  out[b, i, j] = sum_c (q[b, i, c] - k[b, j, c])^2, optionally
//            exp(-out / 2) (the Gaussian kernel K).
//   matmul forward:  y[b, r] = sum_c K(p_r, o_c) x_c                (R, e)
//   matmul backward: s_rc = K(p_r, o_c) (a_r . b_c);
//            dp_r = sum_c s_rc (o_c - p_r)                          (R, d)
//            kb_r = sum_c K(p_r, o_c) b_c        (if with_kb)       (R, e)
// The backward of y = K(p, o) x with grad g is dp = bwd(p, o, g, x) and
// (do, dx) = bwd(o, p, x, g, with_kb); K^T v is the forward with p, o
// swapped. Every reduction accumulates in fp32 (fp64 for fp64 inputs).
#ifndef MMLINATTN_GAUSSIAN_KERNEL_OPS_HPP
#define MMLINATTN_GAUSSIAN_KERNEL_OPS_HPP

#include <ATen/ATen.h>

#include <vector>

at::Tensor gaussian_sqdist_forward_impl(const at::Tensor& q,
                                        const at::Tensor& k, bool apply_exp);

at::Tensor gaussian_kernel_matmul_forward_impl(const at::Tensor& p,
                                               const at::Tensor& o,
                                               const at::Tensor& x);

std::vector<at::Tensor> gaussian_kernel_matmul_backward_impl(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb);

// Device-generic versions built from gaussian_sqdist_forward_impl and
// batched GEMMs, materialising K for a bounded block of rows at a time
// (memory O(rows * C)). Used by backends for shapes their fused kernels do
// not cover (CUDA: d or e above 64).
at::Tensor gaussian_kernel_matmul_forward_chunked(const at::Tensor& p,
                                                  const at::Tensor& o,
                                                  const at::Tensor& x);

std::vector<at::Tensor> gaussian_kernel_matmul_backward_chunked(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb);

#endif  // MMLINATTN_GAUSSIAN_KERNEL_OPS_HPP
