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
  constexpr int64_t L = kLanes<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * x_stride;
    const T* gr = g + r * C;
    T* o = gx + r * C;  // holds t until the last pass
    const T inv_m = T(1) / kernel_row(xr, s, o, C);
    Vec<T> av = {}, bv = {}, gv = {};
    power_pass<T, Cube>(
        o, inv_m, C, p, av, bv,
        [&](int64_t c0, Vec<T> tp)
            __attribute__((always_inline)) { gv += load(gr + c0) * tp; },
        [&](int64_t c, int64_t l, T tp)
            __attribute__((always_inline)) { gv[l] += gr[c] * tp; });
    const T a = std::sqrt(lane_sum<T>(av)), b = std::sqrt(lane_sum<T>(bv));
    const T gdot = lane_sum<T>(gv);
    const T c_tau = gdot / (a * b), c_pow = p * a / b, c_g = gdot / (b * b);
    // g_t, then dx = g_t / s where x > 0 and ds -= g_t t / s
    const Vec<T> zero = {};
    int64_t c0 = 0;
    for (; c0 + L <= C; c0 += L) {
      const Vec<T> t = load(o + c0), sv = load(s + c0);
      const Vec<T> tau = t * inv_m;
      const Vec<T> tpm1 = vpower_minus_one<T, Cube>(tau, p);
      const Vec<T> gt =
          c_tau * tau + c_pow * tpm1 * (load(gr + c0) - c_g * (tpm1 * tau));
      if (ds != nullptr) store(ds + c0, load(ds + c0) - gt * t / sv);
      store(o + c0, load(xr + c0) > zero ? gt / sv : zero);
    }
    for (int64_t c = c0; c < C; ++c) {
      const T t = o[c];
      const T tau = t * inv_m;
      const T tpm1 = power_minus_one<T, Cube>(tau, p);
      const T gt = c_tau * tau + c_pow * tpm1 * (gr[c] - c_g * (tpm1 * tau));
      if (ds != nullptr) ds[c] -= gt * t / s[c];
      o[c] = xr[c] > T(0) ? gt / s[c] : T(0);
    }
  }
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
