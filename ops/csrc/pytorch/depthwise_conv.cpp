// Copyright (c) mmlinattn contributors. All rights reserved.
// Entry point of the depthwise-conv weight gradient: validation, device
// dispatch and the sum of the per-block partials.
#include "depthwise_conv_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

using mmlinattn::shape_str;

at::Tensor depthwise_conv2d_weight_grad_impl(const at::Tensor& grad,
                                             const at::Tensor& input,
                                             int64_t kernel_h,
                                             int64_t kernel_w, int64_t pad_h,
                                             int64_t pad_w) {
  return DISPATCH_DEVICE_IMPL(depthwise_conv2d_weight_grad_impl, grad, input,
                              kernel_h, kernel_w, pad_h, pad_w);
}

at::Tensor depthwise_conv2d_weight_grad(const at::Tensor& grad,
                                        const at::Tensor& input,
                                        int64_t kernel_h, int64_t kernel_w,
                                        int64_t pad_h, int64_t pad_w) {
  const char* op = "depthwise_conv2d_weight_grad";
  TORCH_CHECK_VALUE(grad.dim() == 4 && input.dim() == 4, op,
                    ": expected 4-D (B, C, H, W) grad and input, got grad=",
                    shape_str(grad), ", input=", shape_str(input));
  mmlinattn::check_float_pair(op, "input", input, "grad", grad);
  TORCH_CHECK_VALUE(kernel_h >= 1 && kernel_w >= 1 && pad_h >= 0 &&
                        pad_w >= 0,
                    op, ": kernel sizes must be >= 1 and paddings >= 0, got "
                    "kernel ", kernel_h, "x", kernel_w, ", padding ", pad_h,
                    "x", pad_w);
  const int64_t Ho = input.size(2) + 2 * pad_h - kernel_h + 1;
  const int64_t Wo = input.size(3) + 2 * pad_w - kernel_w + 1;
  TORCH_CHECK_VALUE(grad.size(0) == input.size(0) &&
                        grad.size(1) == input.size(1) && grad.size(2) == Ho &&
                        grad.size(3) == Wo,
                    op, ": grad ", shape_str(grad), " is not the output of a ",
                    kernel_h, "x", kernel_w, " stride-1 conv with padding ",
                    pad_h, "x", pad_w, " of input ", shape_str(input));
  const int64_t C = input.size(1);
  if (grad.numel() == 0 || input.numel() == 0)
    return at::zeros({C, 1, kernel_h, kernel_w}, input.options());
  // unit channel stride: the NCHW view of channels-last memory
  const auto channels_last = [](const at::Tensor& t) {
    return t.stride(1) == 1 ? t
                            : t.contiguous(at::MemoryFormat::ChannelsLast);
  };
  return depthwise_conv2d_weight_grad_impl(channels_last(grad),
                                           channels_last(input), kernel_h,
                                           kernel_w, pad_h, pad_w)
      .sum(0)
      .t()
      .reshape({C, 1, kernel_h, kernel_w});
}
