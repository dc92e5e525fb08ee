// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernels of the focusing function (see focusing_ops.hpp): three short
// passes over each row while it is in cache, instead of ~11 element-wise
// passes over the whole tensor, in 512-bit vectors of GCC's vector
// extension with the reductions in registers; the code is compiled for
// AVX-512, AVX2 and baseline and picked at load time (x86-64 Linux/GCC).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "focusing_ops.hpp"
#include "focusing_rows.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

using namespace mmlinattn::cpu;  // NOLINT: the kernels' vector helpers

template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void forward_rows(const T* x, int64_t x_stride,
                                        const T* s, T* out, int64_t rows,
                                        int64_t C, T p) {
  focus_rows<T, Cube>(x, x_stride, s, out, C, rows, C, p);
}

// Rows [0, rows) of one block; ds (C,) accumulates -g_t t / s if given.
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void backward_rows(const T* g, const T* x,
                                         int64_t x_stride, const T* s,
                                         T* gx, T* ds, int64_t rows,
                                         int64_t C, T p) {
  focus_backward_rows<T, Cube>(g, C, x, x_stride, s, gx, C, ds, rows, C, p);
}

at::Tensor focusing_forward_cpu(const at::Tensor& x, const at::Tensor& scale,
                                double p) {
  const int64_t R = x.size(0), C = x.size(1), x_stride = x.stride(0);
  auto out = at::empty({R, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "focusing_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
    const auto rows = p == 3.0 ? forward_rows<scalar_t, true>
                               : forward_rows<scalar_t, false>;
    at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
      rows(xp + begin * x_stride, x_stride, sp, op + begin * C, end - begin,
           C, static_cast<scalar_t>(p));
    });
  });
  return out;
}

std::vector<at::Tensor> focusing_backward_cpu(const at::Tensor& grad,
                                              const at::Tensor& x,
                                              const at::Tensor& scale,
                                              double p, bool with_scale) {
  const int64_t R = x.size(0), C = x.size(1), x_stride = x.stride(0);
  const int64_t blocks =
      (R + kFocusingRowsPerBlock - 1) / kFocusingRowsPerBlock;
  auto grad_x = at::empty({R, C}, x.options());
  at::Tensor partials =
      with_scale ? at::zeros({blocks, C}, x.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "focusing_backward_cpu", [&] {
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* dsp = with_scale ? partials.data_ptr<scalar_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(
        1, 16384 / std::max<int64_t>(C * kFocusingRowsPerBlock, 1));
    const auto rows = p == 3.0 ? backward_rows<scalar_t, true>
                               : backward_rows<scalar_t, false>;
    at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t r0 = blk * kFocusingRowsPerBlock;
        const int64_t rn = std::min(kFocusingRowsPerBlock, R - r0);
        rows(gp + r0 * C, xp + r0 * x_stride, x_stride, sp, gxp + r0 * C,
             dsp == nullptr ? nullptr : dsp + blk * C, rn, C,
             static_cast<scalar_t>(p));
      }
    });
  });
  return {grad_x, partials};
}

}  // namespace

REGISTER_DEVICE_IMPL(focusing_forward_impl, CPU, focusing_forward_cpu);
REGISTER_DEVICE_IMPL(focusing_backward_impl, CPU, focusing_backward_cpu);
