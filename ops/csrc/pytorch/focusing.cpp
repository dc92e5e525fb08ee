// Copyright (c) mmlinattn contributors. All rights reserved.
// Entry points of the focusing-function ops: validation and device dispatch.
#include "focusing_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

#include <cmath>

using mmlinattn::shape_str;

at::Tensor focusing_forward_impl(const at::Tensor& x, const at::Tensor& scale,
                                 double p) {
  return DISPATCH_DEVICE_IMPL(focusing_forward_impl, x, scale, p);
}

std::vector<at::Tensor> focusing_backward_impl(const at::Tensor& grad,
                                               const at::Tensor& x,
                                               const at::Tensor& scale,
                                               double p, bool with_scale) {
  return DISPATCH_DEVICE_IMPL(focusing_backward_impl, grad, x, scale, p,
                              with_scale);
}

namespace {

// x: (R, C) with unit channel stride; scale: (C,); same float dtype/device.
at::Tensor rows_view(const char* op, const at::Tensor& x,
                     const at::Tensor& scale, double p) {
  TORCH_CHECK_VALUE(x.dim() == 2 && scale.dim() == 1 &&
                        scale.size(0) == x.size(1),
                    op, ": expected x (R, C) and scale (C,), got x=",
                    shape_str(x), ", scale=", shape_str(scale));
  mmlinattn::check_float_pair(op, "x", x, "scale", scale);
  TORCH_CHECK_VALUE(std::isfinite(p) && p > 0, op,
                    ": the focusing factor p must be finite and > 0, got ", p);
  return x.stride(1) == 1 && x.stride(0) >= x.size(1) ? x : x.contiguous();
}

}  // namespace

at::Tensor focusing_forward(const at::Tensor& x, const at::Tensor& scale,
                            double p) {
  const auto rows = rows_view("focusing_forward", x, scale, p);
  if (rows.numel() == 0) return at::empty_like(rows);
  return focusing_forward_impl(rows, scale.contiguous(), p);
}

std::vector<at::Tensor> focusing_backward(const at::Tensor& grad,
                                          const at::Tensor& x,
                                          const at::Tensor& scale, double p,
                                          bool with_scale) {
  const auto rows = rows_view("focusing_backward", x, scale, p);
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes() &&
                        grad.scalar_type() == x.scalar_type(),
                    "focusing_backward: grad ", shape_str(grad), " ",
                    grad.scalar_type(), " does not match x ", shape_str(x),
                    " ", x.scalar_type());
  if (rows.numel() == 0)
    return {at::zeros_like(rows),
            with_scale ? at::zeros({0, x.size(1)}, x.options()) : at::Tensor()};
  return focusing_backward_impl(grad.contiguous(), rows, scale.contiguous(), p,
                                with_scale);
}
