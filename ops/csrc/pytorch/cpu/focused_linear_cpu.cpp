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
#include <memory>
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
  int64_t ld;    // d padded to whole vectors
  int64_t rows;  // rows per block of queries or keys
  int64_t query_blocks() const { return (N + rows - 1) / rows; }
  int64_t key_blocks() const { return (n + rows - 1) / rows; }
  int64_t kv_size() const { return heads * d * ld; }  // padded (h, d, ld)
};

template <typename T>
Geometry geometry(const at::Tensor& q, const at::Tensor& k, int64_t heads) {
  constexpr int64_t L = kLanes<T>;
  const int64_t C = q.size(2), d = C / heads, ld = (d + L - 1) / L * L;
  return {q.size(1), k.size(1), C, heads, d, ld,
          focused_linear_block_rows(C, ld)};
}

// Scratch that every entry of is written before it is read.
template <typename T>
std::unique_ptr<T[]> uninitialised(int64_t size) {
  return std::unique_ptr<T[]>(new T[size]);
}

// out[j] = sum over blocks of blocks[blk * stride + j] for j < count, added
// in block order (zeros without blocks).
template <typename T>
void sum_blocks(const T* blocks, int64_t num, int64_t stride, int64_t count,
                T* out) {
  if (num == 0) {
    std::fill(out, out + count, T(0));
    return;
  }
  std::copy(blocks, blocks + count, out);
  for (int64_t blk = 1; blk < num; ++blk)
    for (int64_t j = 0; j < count; ++j) out[j] += blocks[blk * stride + j];
}

// Row a of a head's (d, .) matrix into column a of its padded transpose
// (d, ld) at col = transpose + a.
template <typename T>
void transpose_row(const T* row, int64_t d, int64_t ld, T* col) {
  for (int64_t j = 0; j < d; ++j) col[j * ld] = row[j];
}

// a . b over d elements
template <typename T>
__attribute__((always_inline)) inline T row_dot(const T* a, const T* b,
                                                int64_t d) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc = {};
  int64_t c = 0;
  for (; c + L <= d; c += L) acc += load(a + c) * load(b + c);
  T dot = lane_sum<T>(acc);
  for (; c < d; ++c) dot += a[c] * b[c];
  return dot;
}

// One block of rows [r0, r0 + rows) of one image's keys: partial (heads, d,
// ld) = phi(k)_h^T v_h and sums (C,) = column sums of phi(k). phi holds rows
// x C, v_pad rows x heads x ld with zero padding columns.
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void key_block(const Geometry& g, const T* k,
                                     int64_t k_row, const T* v, int64_t v_row,
                                     const T* s, T p, int64_t r0, T* phi,
                                     T* v_pad, T* partial, T* sums) {
  constexpr int64_t L = kLanes<T>;
  const int64_t rows = std::min(g.rows, g.n - r0), C = g.C, d = g.d;
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
    for (int64_t r = 0; r < rows; ++r)
      zh[r] = row_dot(phi + r * C + h * d, mh, d) + eps;
    tiled_product<T>(phi + h * d, C, 1, kv + h * d * g.ld, g.ld, rows, d,
                     g.ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store_first(out + (r0 + i) * C + h * d + j * L,
                                       acc / zh[i], d - j * L);
                         });
  }
}

// Backward, queries: one block of rows [r0, r0 + rows) of one image. Per
// head, with G = g / z (rows x ld, zero padded), u = G KV^T and
// gz = -(phi(q) . u) / z (the normaliser's gradient; phi(q) . u equals
// g . numerator / z):
//   g_phi(q) = u + gz mean,  g_KV += phi(q)^T G,  g_mean += gz phi(q),
// then grad_q through the focusing backward, recomputing phi(q) in cache.
// kv_t (heads, d, ld) holds each KV^T, mean (C,) the mean keys; partial
// (heads, d, ld) and mean_partial (C,, zeroed) receive the block's g_KV and
// g_mean, ds (C,, zeroed) its scale gradient unless nullptr.
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void query_backward_block(
    const Geometry& g, const T* grad, int64_t grad_row, const T* q,
    int64_t q_row, const T* s, T p, const T* kv_t, const T* mean, const T* z,
    int64_t r0, T* phi, T* g_pad, T* g_phi, T* grad_q, T* partial,
    T* mean_partial, T* ds) {
  constexpr int64_t L = kLanes<T>;
  const int64_t rows = std::min(g.rows, g.N - r0), C = g.C, d = g.d;
  const int64_t heads = g.heads, ld = g.ld;
  focus_rows<T, Cube>(q + r0 * q_row, q_row, s, phi, C, rows, C, p);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const T zr = z[h * g.N + r0 + r];
      const T* gr = grad + (r0 + r) * grad_row + h * d;
      T* dst = g_pad + (r * heads + h) * ld;
      for (int64_t c = 0; c < d; ++c) dst[c] = gr[c] / zr;
    }
  for (int64_t h = 0; h < heads; ++h) {
    tiled_product<T>(g_pad + h * ld, heads * ld, 1, kv_t + h * d * ld, ld,
                     rows, d, ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store_first(g_phi + i * C + h * d + j * L, acc,
                                       d - j * L);
                         });
    const T* mh = mean + h * d;
    T* gm = mean_partial + h * d;
    for (int64_t r = 0; r < rows; ++r) {
      const T* ph = phi + r * C + h * d;
      T* uh = g_phi + r * C + h * d;
      const T gz = -row_dot(ph, uh, d) / z[h * g.N + r0 + r];
      for (int64_t c = 0; c < d; ++c) {
        uh[c] += gz * mh[c];
        gm[c] += gz * ph[c];
      }
    }
    tiled_product<T>(phi + h * d, 1, C, g_pad + h * ld, heads * ld, d, rows,
                     ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store(partial + (h * d + i) * ld + j * L, acc);
                         });
  }
  focus_backward_rows<T, Cube>(g_phi, C, q + r0 * q_row, q_row, s,
                               grad_q + r0 * C, C, ds, rows, C, p);
}

// Backward, keys: one block of rows [r0, r0 + rows) of one image, given
// gkv (heads, d, ld) = g_KV / n, gkv_t (heads, d, ld) each one's transpose
// and gmean (heads, ld) = g_mean / n:
//   grad_v = phi(k) gkv,  g_phi(k) = v gkv^T + gmean,
// then grad_k through the focusing backward; ds as for the queries.
template <typename T, bool Cube>
MMLINATTN_SIMD_CLONES void key_backward_block(
    const Geometry& g, const T* k, int64_t k_row, const T* v, int64_t v_row,
    const T* s, T p, const T* gkv, const T* gkv_t, const T* gmean,
    int64_t r0, T* phi, T* g_phi, T* grad_k, T* grad_v, T* ds) {
  constexpr int64_t L = kLanes<T>;
  const int64_t rows = std::min(g.rows, g.n - r0), C = g.C, d = g.d;
  const int64_t ld = g.ld;
  focus_rows<T, Cube>(k + r0 * k_row, k_row, s, phi, C, rows, C, p);
  for (int64_t h = 0; h < g.heads; ++h) {
    tiled_product<T>(phi + h * d, C, 1, gkv + h * d * ld, ld, rows, d,
                     ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store_first(grad_v + (r0 + i) * C + h * d + j * L,
                                       acc, d - j * L);
                         });
    const T* gm = gmean + h * ld;
    tiled_product<T>(v + r0 * v_row + h * d, v_row, 1, gkv_t + h * d * ld, ld,
                     rows, d, ld / L,
                     [&](int64_t i, int64_t j, Vec<T> acc)
                         __attribute__((always_inline)) {
                           store_first(g_phi + i * C + h * d + j * L,
                                       acc + load(gm + j * L), d - j * L);
                         });
  }
  focus_backward_rows<T, Cube>(g_phi, C, k + r0 * k_row, k_row, s,
                               grad_k + r0 * C, C, ds, rows, C, p);
}

std::vector<at::Tensor> focused_linear_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& scale, double p, int64_t heads) {
  const int64_t B = q.size(0), N = q.size(1), C = q.size(2), d = C / heads;
  auto out = at::empty({B, N, C}, q.options());
  auto kv = at::empty({B, heads, d, d + 1}, q.options());
  auto z = at::empty({B, heads, N, 1}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "focused_linear_forward", [&] {
    using T = scalar_t;
    const Geometry g = geometry<T>(q, k, heads);
    const int64_t key_blocks = g.key_blocks(), query_blocks = g.query_blocks();
    const int64_t kv_size = g.kv_size();
    const bool cube = p == 3.0;
    const auto keys = cube ? key_block<T, true> : key_block<T, false>;
    const auto queries = cube ? query_block<T, true> : query_block<T, false>;
    const T* qp = q.data_ptr<T>();
    const T* kp = k.data_ptr<T>();
    const T* vp = v.data_ptr<T>();
    const T* sp = scale.data_ptr<T>();
    const T pp = static_cast<T>(p);
    auto partial = uninitialised<T>(B * key_blocks * kv_size);
    auto sums = uninitialised<T>(B * key_blocks * C);
    at::parallel_for(0, B * key_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.rows * C);
      std::vector<T> v_pad(g.rows * heads * g.ld, T(0));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / key_blocks, blk = item % key_blocks;
        keys(g, kp + b * k.stride(0), k.stride(1), vp + b * v.stride(0),
             v.stride(1), sp, pp, blk * g.rows, phi.data(), v_pad.data(),
             partial.get() + item * kv_size, sums.get() + item * C);
      }
    });
    // Per row c of the stacked (heads * d, ld) key-value products: the
    // blocks added in order, / n, then kv's row with the mean key c.
    auto kv_pad = uninitialised<T>(B * kv_size), mean = uninitialised<T>(B * C);
    const T n = static_cast<T>(g.n);
    T* kvo = kv.data_ptr<T>();
    at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / C, c = item % C;
        T* row = kv_pad.get() + b * kv_size + c * g.ld;
        sum_blocks(partial.get() + b * key_blocks * kv_size + c * g.ld,
                   key_blocks, kv_size, g.ld, row);
        T sum;
        sum_blocks(sums.get() + b * key_blocks * C + c, key_blocks, C,
                   int64_t(1), &sum);
        for (int64_t j = 0; j < g.ld; ++j) row[j] /= n;
        mean[item] = sum / n;
        T* kv_row = kvo + item * (d + 1);
        std::copy(row, row + d, kv_row);
        kv_row[d] = mean[item];
      }
    });
    T* op = out.data_ptr<T>();
    T* zp = z.data_ptr<T>();
    at::parallel_for(0, B * query_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.rows * C);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / query_blocks, blk = item % query_blocks;
        queries(g, qp + b * q.stride(0), q.stride(1), sp, pp,
                kv_pad.get() + b * kv_size, mean.get() + b * C,
                blk * g.rows, phi.data(), op + b * N * C, zp + b * heads * N);
      }
    });
  });
  return {out, kv, z};
}

std::vector<at::Tensor> focused_linear_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& scale, const at::Tensor& kv,
    const at::Tensor& z, double p, int64_t heads, bool with_scale) {
  const int64_t B = q.size(0), N = q.size(1), n = k.size(1), C = q.size(2);
  const int64_t d = C / heads;
  auto grad_q = at::empty({B, N, C}, q.options());
  auto grad_k = at::empty({B, n, C}, q.options());
  auto grad_v = at::empty({B, n, C}, q.options());
  at::Tensor partials;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "focused_linear_backward", [&] {
    using T = scalar_t;
    const Geometry g = geometry<T>(q, k, heads);
    const int64_t key_blocks = g.key_blocks(), query_blocks = g.query_blocks();
    const int64_t kv_size = g.kv_size(), ld = g.ld;
    const int64_t query_items = B * query_blocks;
    if (with_scale)
      partials = at::zeros({query_items + B * key_blocks, C}, q.options());
    T* ds = with_scale ? partials.data_ptr<T>() : nullptr;
    const bool cube = p == 3.0;
    const auto queries = cube ? query_backward_block<T, true>
                              : query_backward_block<T, false>;
    const auto keys =
        cube ? key_backward_block<T, true> : key_backward_block<T, false>;
    const T* gp = grad.data_ptr<T>();
    const T* qp = q.data_ptr<T>();
    const T* kp = k.data_ptr<T>();
    const T* vp = v.data_ptr<T>();
    const T* sp = scale.data_ptr<T>();
    const T* kvp = kv.data_ptr<T>();
    const T* zp = z.data_ptr<T>();
    const T pp = static_cast<T>(p);
    // Per image: each head's KV^T, padded to ld columns, and the mean keys.
    std::vector<T> kv_t(B * kv_size, T(0));
    auto mean = uninitialised<T>(B * C);
    at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / C, c = item % C, h = c / d, a = c % d;
        const T* row = kvp + item * (d + 1);  // row a of head h's [KV | mean]
        transpose_row(row, d, ld, kv_t.data() + b * kv_size + h * d * ld + a);
        mean[item] = row[d];
      }
    });
    auto partial = uninitialised<T>(query_items * kv_size);
    std::vector<T> mean_partial(query_items * C, T(0));
    T* gqp = grad_q.data_ptr<T>();
    at::parallel_for(0, query_items, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.rows * C), g_phi(g.rows * C);
      std::vector<T> g_pad(g.rows * heads * ld, T(0));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / query_blocks, blk = item % query_blocks;
        queries(g, gp + b * grad.stride(0), grad.stride(1),
                qp + b * q.stride(0), q.stride(1), sp, pp,
                kv_t.data() + b * kv_size, mean.get() + b * C,
                zp + b * heads * N, blk * g.rows, phi.data(), g_pad.data(),
                g_phi.data(), gqp + b * N * C, partial.get() + item * kv_size,
                mean_partial.data() + item * C,
                ds == nullptr ? nullptr : ds + item * C);
      }
    });
    // Per row c = (h, a) of the stacked (heads * d, ld) products: the
    // blocks added in order, / n; its transpose into column a of gkv_t.
    auto gkv = uninitialised<T>(B * kv_size);
    std::vector<T> gkv_t(B * kv_size, T(0)), gmean(B * heads * ld, T(0));
    const T n_keys = static_cast<T>(n);
    at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / C, c = item % C, h = c / d, a = c % d;
        T* row = gkv.get() + b * kv_size + c * ld;
        sum_blocks(partial.get() + b * query_blocks * kv_size + c * ld,
                   query_blocks, kv_size, ld, row);
        T sum;
        sum_blocks(mean_partial.data() + b * query_blocks * C + c,
                   query_blocks, C, int64_t(1), &sum);
        for (int64_t j = 0; j < d; ++j) row[j] /= n_keys;
        transpose_row(row, d, ld, gkv_t.data() + b * kv_size + h * d * ld + a);
        gmean[(b * heads + h) * ld + a] = sum / n_keys;
      }
    });
    T* gkp = grad_k.data_ptr<T>();
    T* gvp = grad_v.data_ptr<T>();
    at::parallel_for(0, B * key_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> phi(g.rows * C), g_phi(g.rows * C);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / key_blocks, blk = item % key_blocks;
        keys(g, kp + b * k.stride(0), k.stride(1), vp + b * v.stride(0),
             v.stride(1), sp, pp, gkv.get() + b * kv_size,
             gkv_t.data() + b * kv_size, gmean.data() + b * heads * ld,
             blk * g.rows, phi.data(), g_phi.data(), gkp + b * n * C,
             gvp + b * n * C,
             ds == nullptr ? nullptr : ds + (query_items + item) * C);
      }
    });
  });
  return {grad_q, grad_k, grad_v, partials};
}

}  // namespace

REGISTER_DEVICE_IMPL(focused_linear_forward_impl, CPU,
                     focused_linear_forward_cpu);
REGISTER_DEVICE_IMPL(focused_linear_backward_impl, CPU,
                     focused_linear_backward_cpu);
