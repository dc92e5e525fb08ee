// Copyright (c) mmlinattn contributors. All rights reserved.
// Entry points of the fused focused linear attention, forward and backward:
// validation and device dispatch.
#include <cmath>

#include "focused_linear_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

using mmlinattn::shape_str;

std::vector<at::Tensor> focused_linear_forward_impl(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& scale, double p, int64_t heads) {
  return DISPATCH_DEVICE_IMPL(focused_linear_forward_impl, q, k, v, scale, p,
                              heads);
}

std::vector<at::Tensor> focused_linear_backward_impl(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& scale, const at::Tensor& kv,
    const at::Tensor& z, double p, int64_t heads, bool with_scale) {
  return DISPATCH_DEVICE_IMPL(focused_linear_backward_impl, grad, q, k, v,
                              scale, kv, z, p, heads, with_scale);
}

namespace {

// unit channel stride; any row and batch strides
at::Tensor rows_of(const at::Tensor& x) {
  return x.stride(2) == 1 ? x : x.contiguous();
}

// The checks both directions share, for op.
void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, const at::Tensor& scale, double p,
                  int64_t heads) {
  TORCH_CHECK_VALUE(
      q.dim() == 3 && k.dim() == 3 && k.sizes() == v.sizes() &&
          k.size(0) == q.size(0) && k.size(2) == q.size(2) &&
          scale.dim() == 1 && scale.size(0) == q.size(2),
      op, ": expected q (B, N, C), k and v (B, n, C) and scale (C,), got q=",
      shape_str(q), ", k=", shape_str(k), ", v=", shape_str(v),
      ", scale=", shape_str(scale));
  TORCH_CHECK_VALUE(q.size(2) >= 1, op, ": needs at least one channel");
  TORCH_CHECK_VALUE(heads >= 1 && q.size(2) % heads == 0, op, ": ", heads,
                    " heads do not divide C = ", q.size(2));
  TORCH_CHECK_VALUE(k.size(1) >= 1, op,
                    ": needs at least one key (the normaliser is a mean "
                    "over the keys)");
  TORCH_CHECK_VALUE(std::isfinite(p) && p > 0, op,
                    ": the focusing factor p must be finite and > 0, got ", p);
  mmlinattn::check_float_pair(op, "q", q, "k", k);
  mmlinattn::check_float_pair(op, "q", q, "v", v);
  mmlinattn::check_float_pair(op, "q", q, "scale", scale);
}

}  // namespace

std::vector<at::Tensor> focused_linear_forward(const at::Tensor& q,
                                               const at::Tensor& k,
                                               const at::Tensor& v,
                                               const at::Tensor& scale,
                                               double p, int64_t heads) {
  check_inputs("focused_linear_forward", q, k, v, scale, p, heads);
  return focused_linear_forward_impl(rows_of(q), rows_of(k), rows_of(v),
                                     scale.contiguous(), p, heads);
}

std::vector<at::Tensor> focused_linear_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& scale, const at::Tensor& kv,
    const at::Tensor& z, double p, int64_t heads, bool with_scale) {
  const char* op = "focused_linear_backward";
  check_inputs(op, q, k, v, scale, p, heads);
  const int64_t B = q.size(0), N = q.size(1), C = q.size(2), d = C / heads;
  TORCH_CHECK_VALUE(grad.sizes() == q.sizes() &&
                        kv.sizes() == at::IntArrayRef({B, heads, d, d + 1}) &&
                        z.sizes() == at::IntArrayRef({B, heads, N, 1}),
                    op, ": expected grad ", shape_str(q), ", kv (B, h, d, d + 1)"
                    " and z (B, h, N, 1) of the forward, got grad=",
                    shape_str(grad), ", kv=", shape_str(kv), ", z=",
                    shape_str(z));
  mmlinattn::check_float_pair(op, "q", q, "grad", grad);
  mmlinattn::check_float_pair(op, "q", q, "kv", kv);
  mmlinattn::check_float_pair(op, "q", q, "z", z);
  return focused_linear_backward_impl(
      rows_of(grad), rows_of(q), rows_of(k), rows_of(v), scale.contiguous(),
      kv.contiguous(), z.contiguous(), p, heads, with_scale);
}
