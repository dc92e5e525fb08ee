// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernel of the fused focused linear attention (focused_linear_ops.hpp).
// Unfused, one layer is ~10 passes over (B, N, C) tensors: phi(q) and phi(k)
// written out, two batched GEMMs (the key-value product and q against it with
// the mean key as an extra, 65th, column), the slice and the division, and
// the head transposes. Here each block of rows is focused in cache and goes
// straight into register-tiled products (cpu_tile.hpp):
//   keys:    per block, phi(k)^T v per head and the column sums of phi(k),
//            partial sums that are then added in block order;
//   queries: per block, phi(q) against kv per head, divided by the
//            normaliser in the tile's epilogue, written once to out.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_tile.hpp"
#include "focused_linear_ops.hpp"
#include "focusing_rows.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

using namespace mmlinattn::cpu;  // NOLINT: the kernels' vector helpers

struct Geometry {
  int64_t N, n, C, heads, d;
  int64_t ld;         // d padded to whole vectors
  int64_t rows;       // query rows per block
  int64_t key_rows;   // key rows per block
};

// One block of rows [r0, r0 + rows) of one image's keys: partial (heads, d,
// ld) = phi(k)_h^T v_h and sums (C,) = column sums of phi(k). phi holds rows
// x C, v_pad rows x heads x ld with zero padding columns.
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void key_block(const Geometry& g, const T* k,
                                     int64_t k_row, const T* v, int64_t v_row,
                                     const T* s, T p, int64_t r0, T* phi,
                                     T* v_pad, T* partial, T* sums) {
  constexpr int64_t L = kLanes<T>;
  const int64_t rows = std::min(g.key_rows, g.n - r0), C = g.C, d = g.d;
  focus_rows<T, Cube>(k + r0 * k_row, k_row, s, phi, C, rows, C, p);
  int64_t c0 = 0;
  for (; c0 + L <= C; c0 += L) {
    Vec<T> acc = {};
    for (int64_t r = 0; r < rows; ++r) acc += load(phi + r * C + c0);
    store(sums + c0, acc);
  }
  for (; c0 < C; ++c0) {
    T acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += phi[r * C + c0];
    sums[c0] = acc;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < g.heads; ++h)
      std::memcpy(v_pad + (r * g.heads + h) * g.ld,
                  v + (r0 + r) * v_row + h * d, sizeof(T) * d);
  for (int64_t h = 0; h < g.heads; ++h) {
    T* out = partial + h * d * g.ld;
    tiled_product<T>(phi + h * d, 1, C, v_pad + h * g.ld, g.heads * g.ld, d,
                     rows, g.ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store(out + i * g.ld + j * L, acc);
                         });
  }
}

// One block of rows [r0, r0 + rows) of one image's queries: z (heads, N)
// and out (N, C), given kv (heads, d, ld) and the mean key (C,).
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void query_block(const Geometry& g, const T* q,
                                       int64_t q_row, const T* s, T p,
                                       const T* kv, const T* mean, int64_t r0,
                                       T* phi, T* out, T* z) {
  constexpr int64_t L = kLanes<T>;
  const int64_t rows = std::min(g.rows, g.N - r0), C = g.C, d = g.d;
  const T eps = static_cast<T>(kFocusedLinearNormaliserEps);
  focus_rows<T, Cube>(q + r0 * q_row, q_row, s, phi, C, rows, C, p);
  for (int64_t h = 0; h < g.heads; ++h) {
    T* zh = z + h * g.N + r0;
    const T* mh = mean + h * d;
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = phi + r * C + h * d;
      Vec<T> acc = {};
      int64_t c = 0;
      for (; c + L <= d; c += L) acc += load(row + c) * load(mh + c);
      T dot = lane_sum<T>(acc);
      for (; c < d; ++c) dot += row[c] * mh[c];
      zh[r] = dot + eps;
    }
    tiled_product<T>(phi + h * d, C, 1, kv + h * d * g.ld, g.ld, rows, d,
                     g.ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           const Vec<T> o = acc / zh[i];
                           T* dst = out + (r0 + i) * C + h * d + j * L;
                           if ((j + 1) * L <= d)
                             store(dst, o);
                           else
                             std::memcpy(dst, &o, sizeof(T) * (d - j * L));
                         });
  }
}

std::vector<at::Tensor> focused_linear_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& scale, double p, int64_t heads) {
  const int64_t B = q.size(0), C = q.size(2), d = C / heads;
  Geometry g{q.size(1), k.size(1), C, heads, d, 0,
             focused_linear_query_rows(C), 0};
  const int64_t query_blocks = (g.N + g.rows - 1) / g.rows;
  auto out = at::empty({B, g.N, C}, q.options());
  auto kv = at::empty({B, heads, d, d + 1}, q.options());
  auto z = at::empty({B, heads, g.N, 1}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "focused_linear_forward", [&] {
    using T = scalar_t;
    constexpr int64_t L = kLanes<T>;
    g.ld = (d + L - 1) / L * L;
    g.key_rows = focused_linear_key_rows(C, g.ld);
    const int64_t key_blocks = (g.n + g.key_rows - 1) / g.key_rows;
    const bool cube = p == 3.0;
    const auto keys = cube ? key_block<T, true> : key_block<T, false>;
    const auto queries = cube ? query_block<T, true> : query_block<T, false>;
    const T* qp = q.data_ptr<T>();
    const T* kp = k.data_ptr<T>();
    const T* vp = v.data_ptr<T>();
    const T* sp = scale.data_ptr<T>();
    const T pp = static_cast<T>(p);
    const int64_t kv_size = heads * d * g.ld;
    std::vector<T> partial(B * key_blocks * kv_size), sums(B * key_blocks * C);
    at::parallel_for(0, B * key_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.key_rows * C);
      std::vector<T> v_pad(g.key_rows * heads * g.ld, T(0));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / key_blocks, blk = item % key_blocks;
        keys(g, kp + b * k.stride(0), k.stride(1), vp + b * v.stride(0),
             v.stride(1), sp, pp, blk * g.key_rows, phi.data(), v_pad.data(),
             partial.data() + item * kv_size, sums.data() + item * C);
      }
    });
    // Per row c of the stacked (heads * d, ld) key-value products: the
    // blocks added in order, / n, then kv's row with the mean key c.
    std::vector<T> kv_pad(B * kv_size), mean(B * C);
    const T n = static_cast<T>(g.n);
    T* kvo = kv.data_ptr<T>();
    at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / C, c = item % C;
        T* row = kv_pad.data() + b * kv_size + c * g.ld;
        const T* pb = partial.data() + b * key_blocks * kv_size + c * g.ld;
        const T* sb = sums.data() + b * key_blocks * C + c;
        T sum = sb[0];
        std::copy(pb, pb + g.ld, row);
        for (int64_t blk = 1; blk < key_blocks; ++blk) {
          for (int64_t j = 0; j < g.ld; ++j) row[j] += pb[blk * kv_size + j];
          sum += sb[blk * C];
        }
        for (int64_t j = 0; j < g.ld; ++j) row[j] /= n;
        mean[b * C + c] = sum / n;
        T* kv_row = kvo + (b * C + c) * (d + 1);
        std::copy(row, row + d, kv_row);
        kv_row[d] = mean[b * C + c];
      }
    });
    T* op = out.data_ptr<T>();
    T* zp = z.data_ptr<T>();
    at::parallel_for(0, B * query_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.rows * C);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / query_blocks, blk = item % query_blocks;
        queries(g, qp + b * q.stride(0), q.stride(1), sp, pp,
                kv_pad.data() + b * kv_size, mean.data() + b * C,
                blk * g.rows, phi.data(), op + b * g.N * C,
                zp + b * heads * g.N);
      }
    });
  });
  return {out, kv, z};
}

}  // namespace

REGISTER_DEVICE_IMPL(focused_linear_forward_impl, CPU,
                     focused_linear_forward_cpu);
