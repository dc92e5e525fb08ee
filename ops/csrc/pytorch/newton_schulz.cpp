// Copyright (c) mmlinattn contributors. All rights reserved.
// Entry point of the Newton-Schulz steps: validation and device dispatch.
#include "newton_schulz_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

using mmlinattn::shape_str;

at::Tensor newton_schulz_steps_impl(const at::Tensor& inv,
                                    const at::Tensor& mat, int64_t num_iter) {
  return DISPATCH_DEVICE_IMPL(newton_schulz_steps_impl, inv, mat, num_iter);
}

at::Tensor newton_schulz_steps(const at::Tensor& inv, const at::Tensor& mat,
                               int64_t num_iter) {
  const char* op = "newton_schulz_steps";
  TORCH_CHECK_VALUE(inv.dim() == 3 && inv.size(1) == inv.size(2) &&
                        mat.sizes() == inv.sizes(),
                    op, ": expected inv and mat of one shape (batch, m, m), "
                    "got inv=", shape_str(inv), ", mat=", shape_str(mat));
  mmlinattn::check_float_pair(op, "inv", inv, "mat", mat);
  TORCH_CHECK_VALUE(num_iter >= 0, op, ": num_iter must be >= 0, got ",
                    num_iter);
  if (num_iter == 0 || inv.numel() == 0) return inv.clone();
  return newton_schulz_steps_impl(inv.contiguous(), mat.contiguous(),
                                  num_iter);
}
