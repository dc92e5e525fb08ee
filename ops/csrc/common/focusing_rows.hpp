// Copyright (c) mmlinattn contributors. All rights reserved.
// Row routines of the focusing function (focusing_ops.hpp) shared by the
// CPU kernels that apply it: the focusing op itself and the fused focused
// linear attention. Forced inline, so each kernel's SIMD clones compile them
// for their own vector width.
#ifndef MMLINATTN_FOCUSING_ROWS_HPP
#define MMLINATTN_FOCUSING_ROWS_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_vector.hpp"

namespace mmlinattn {
namespace cpu {

constexpr double kKernelEps = 1e-6;  // added after ReLU, as upstream

// v^(p-1); p == 3 (every released model) without pow, so that it
// vectorises
template <typename T, bool Cube>
__attribute__((always_inline)) inline T power_minus_one(T v, T p) {
  if constexpr (Cube)
    return v * v;
  else
    return std::pow(v, p - 1);
}

// A row is processed in vectors of kLanes<T> elements (cpu_vector.hpp);
// partial sums and maxima live in the lanes and are reduced by a fixed
// pairwise tree, so every clone sums in the same order. (OpenMP simd
// reductions over these short rows, C = 32 ... 512, compiled mostly to
// scalar code: 2.2-2.6x slower.) Columns past the last full vector go into
// the first lanes.

// std::max(a, b) lane-wise
template <typename T>
__attribute__((always_inline)) inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a < b ? b : a;
}

// The lanes' pairwise tree, op(v[l], v[l + w]) for w = L/2, ..., 1, in
// registers (a reduction through memory stalls on store forwarding).
template <typename Op>
__attribute__((always_inline)) inline float lane_reduce(Vec<float> v, Op op) {
  v = op(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9,
                                    10, 11, 12, 13, 14, 15));
  v = op(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7,
                                    4, 5, 6, 7));
  v = op(v, __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                                    2, 3, 2, 3));
  v = op(v, __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                    1, 1, 1, 1));
  return v[0];
}

template <typename Op>
__attribute__((always_inline)) inline double lane_reduce(Vec<double> v, Op op) {
  v = op(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7));
  v = op(v, __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3));
  v = op(v, __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1));
  return v[0];
}

template <typename T>
__attribute__((always_inline)) inline T lane_sum(Vec<T> v) {
  return lane_reduce(v, [](Vec<T> a, Vec<T> b) { return a + b; });
}

template <typename T>
__attribute__((always_inline)) inline T lane_max(Vec<T> v) {
  return lane_reduce(v, vmax<T>);
}

// Columns past the last full vector (C % kLanes<T>), added to the lanes.
template <typename T, typename F>
__attribute__((always_inline)) inline void tail(int64_t c0, int64_t C, F f) {
  for (int64_t c = c0; c < C; ++c) f(c, c - c0);
}

// t = (relu(x) + eps) / s into out, returns max_c t (> 0).
template <typename T>
__attribute__((always_inline)) inline T kernel_row(const T* x, const T* s,
                                                 T* out, int64_t C) {
  constexpr int64_t L = kLanes<T>;
  const T eps = static_cast<T>(kKernelEps);
  const Vec<T> zero = {};
  Vec<T> mv = {};
  int64_t c0 = 0;
  for (; c0 + L <= C; c0 += L) {
    const Vec<T> xv = load(x + c0);
    const Vec<T> t = ((xv < zero ? zero : xv) + eps) / load(s + c0);
    store(out + c0, t);
    mv = vmax<T>(mv, t);
  }
  tail<T>(c0, C, [&](int64_t c, int64_t l) {
    const T t = (std::max(x[c], T(0)) + eps) / s[c];
    out[c] = t;
    mv[l] = std::max(mv[l], t);
  });
  return lane_max<T>(mv);
}

// tau = t / m, tau^(p-1) and tau^p lane-wise
template <typename T, bool Cube>
__attribute__((always_inline)) inline Vec<T> vpower_minus_one(Vec<T> v, T p) {
  if constexpr (Cube) {
    return v * v;
  } else {
    for (int64_t l = 0; l < kLanes<T>; ++l) v[l] = std::pow(v[l], p - 1);
    return v;
  }
}

// One pass over a row t (C,) with inv_m = 1 / max(t): tau = t inv_m and
// tau^p, the sums of tau^2 and tau^2p accumulated into the lanes of av and
// bv, and each vector of tau^p handed to vector(c0, tau^p) (columns past the
// last full vector: lane(c, lane index, tau^p)).
template <typename T, bool Cube, typename VectorFn, typename LaneFn>
__attribute__((always_inline)) inline void power_pass(const T* t, T inv_m,
                                                      int64_t C, T p,
                                                      Vec<T>& av, Vec<T>& bv,
                                                      VectorFn vector,
                                                      LaneFn lane) {
  constexpr int64_t L = kLanes<T>;
  int64_t c0 = 0;
  for (; c0 + L <= C; c0 += L) {
    const Vec<T> tau = load(t + c0) * inv_m;
    const Vec<T> tp = vpower_minus_one<T, Cube>(tau, p) * tau;
    av += tau * tau;
    bv += tp * tp;
    vector(c0, tp);
  }
  tail<T>(c0, C, [&](int64_t c, int64_t l) {
    const T tau = t[c] * inv_m;
    const T tp = power_minus_one<T, Cube>(tau, p) * tau;
    av[l] += tau * tau;
    bv[l] += tp * tp;
    lane(c, l, tp);
  });
}

// phi_p of rows [0, rows) of x (row stride x_stride) into out (row stride
// out_stride).
template <typename T, bool Cube>
__attribute__((always_inline)) inline void focus_rows(
    const T* x, int64_t x_stride, const T* s, T* out, int64_t out_stride,
    int64_t rows, int64_t C, T p) {
  for (int64_t r = 0; r < rows; ++r) {
    T* o = out + r * out_stride;
    const T m = kernel_row(x + r * x_stride, s, o, C), inv_m = T(1) / m;
    // tau^p into o
    Vec<T> av = {}, bv = {};
    power_pass<T, Cube>(
        o, inv_m, C, p, av, bv,
        [&](int64_t c0, Vec<T> tp)
            __attribute__((always_inline)) { store(o + c0, tp); },
        [&](int64_t c, int64_t, T tp)
            __attribute__((always_inline)) { o[c] = tp; });
    const T factor =
        m * std::sqrt(lane_sum<T>(av)) / std::sqrt(lane_sum<T>(bv));
    for (int64_t c = 0; c < C; ++c) o[c] *= factor;
  }
}

// The focusing function's backward (focusing_ops.hpp) for rows [0, rows):
// upstream gradient g (row stride g_stride), inputs x (row stride x_stride)
// into gx (row stride gx_stride; holds t until the row's last pass, so it
// must not alias g or x); ds (C,) accumulates -g_t t / s if given.
template <typename T, bool Cube>
__attribute__((always_inline)) inline void focus_backward_rows(
    const T* g, int64_t g_stride, const T* x, int64_t x_stride, const T* s,
    T* gx, int64_t gx_stride, T* ds, int64_t rows, int64_t C, T p) {
  constexpr int64_t L = kLanes<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * x_stride;
    const T* gr = g + r * g_stride;
    T* o = gx + r * gx_stride;
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

}  // namespace cpu
}  // namespace mmlinattn

#endif  // MMLINATTN_FOCUSING_ROWS_HPP
