// Copyright (c) mmlinattn contributors. All rights reserved.
// Device-agnostic entry point of the weight gradient of a depthwise 2-D
// convolution (stride 1, no dilation) over channels-last tensors:
//
//   grad_w[c, 0, i, j] = sum_{b, y, x} grad[b, c, y, x] *
//                        input[b, c, y + i - pad_h, x + j - pad_w]
//
// (terms outside the input are zero). grad (B, C, Ho, Wo) and input
// (B, C, H, W) have unit channel stride (the NCHW views of NHWC memory),
// Ho = H + 2 pad_h - kernel_h + 1, Wo likewise. The sums run per block of
// kDepthwiseRowsPerBlock output rows into (blocks, kh * kw, C) partials (a
// fixed partition, so the result does not depend on the threads), then
// over the blocks. Float and double; sums accumulate in the input type.
#ifndef MMLINATTN_DEPTHWISE_CONV_OPS_HPP
#define MMLINATTN_DEPTHWISE_CONV_OPS_HPP

#include <ATen/ATen.h>

#include <cstdint>

constexpr int64_t kDepthwiseRowsPerBlock = 4;

// (blocks, kernel_h * kernel_w, C) partial sums
at::Tensor depthwise_conv2d_weight_grad_impl(const at::Tensor& grad,
                                             const at::Tensor& input,
                                             int64_t kernel_h,
                                             int64_t kernel_w, int64_t pad_h,
                                             int64_t pad_w);

#endif  // MMLINATTN_DEPTHWISE_CONV_OPS_HPP
