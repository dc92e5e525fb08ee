// Copyright (c) mmlinattn contributors. All rights reserved.
// CPU kernels of the Gaussian-kernel ops.
//
// * Distances: register-blocked exact difference form sum_c (p_c - o_c)^2
//   against a transposed (d, C) copy of the second point set, with the exp
//   fused into the store. On x86-64 Linux/GCC the float tile is compiled
//   for AVX-512, AVX2 and baseline and picked at load time (function
//   multiversioning), so no -march flag is needed.
// * Fused products: work items are (column split, batch*head, row tile);
//   each computes K for an L2-sized tile, multiplies it with the BLAS through
//   ATen and drops it, so memory stays O((R + C)(d + e)). Column splits
//   (summed at the end, deterministic) keep the threads busy when R is small.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gaussian_kernel_ops.hpp"
#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

namespace {

// a * b + c may become one FMA in the distance and exp code below (ISO C++
// modes default to -ffp-contract=off).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif

constexpr int64_t kTileElems = 1 << 15;  // kernel entries of a fused tile
constexpr int64_t kTileCols = 512;       // at most, columns of a tile
constexpr int64_t kMinTileRows = 64, kMaxTileRows = 2048;
constexpr int64_t kSqdistRows = 16;  // rows of one sqdist work item

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// exp(-dist / 2) for dist >= 0, branch-free so that it vectorises: range
// reduction x = n ln2 + r (ln2 split in two constants) and a degree-5
// minimax polynomial for e^r on |r| <= ln2 / 2 (the Cephes expf
// coefficients); within 2 ulp of std::exp, 0 below exp(-87).
inline __attribute__((always_inline)) float gaussian_of(float dist) {
  constexpr float kMin = -87.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds
  float x = -0.5f * dist;
  const bool underflow = x < kMin;
  x = underflow ? kMin : x;
  const float shifted = x * 1.44269504088896341f + kRound;
  int32_t n_bits;
  std::memcpy(&n_bits, &shifted, sizeof(n_bits));
  const float n = shifted - kRound;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  // 2^n: n = n_bits - bits(kRound) lies in [-126, 0], a normal exponent.
  const int32_t scale_bits = (n_bits - 0x4B400000 + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  return underflow ? 0.0f : y * scale;
}

inline double gaussian_of(double dist) { return std::exp(-0.5 * dist); }

// out[r * ldout + j] = sum_c (p[r * d + c] - oT[c * ldo + j])^2 (or its
// Gaussian) for r < rows, j < cols. Blocks of kRows x kCols outputs stay in
// registers while the channels stream through.
template <typename T>
inline __attribute__((always_inline)) void dist_tile_impl(
    const T* p, int64_t rows, int64_t d, const T* oT, int64_t ldo,
    int64_t cols, T* out, int64_t ldout, bool apply_exp) {
  constexpr int kRows = 4, kCols = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t rn = std::min<int64_t>(kRows, rows - r0);
    // The tail block repeats the last row; its results are not stored.
    const T* pr[kRows];
    for (int r = 0; r < kRows; ++r)
      pr[r] = p + std::min<int64_t>(r0 + r, rows - 1) * d;
    for (int64_t j0 = 0; j0 < cols; j0 += kCols) {
      const int64_t jn = std::min<int64_t>(kCols, cols - j0);
      T acc[kRows][kCols] = {};
      if (jn == kCols) {
        for (int64_t c = 0; c < d; ++c) {
          const T* oc = oT + c * ldo + j0;
          const T p0 = pr[0][c], p1 = pr[1][c], p2 = pr[2][c], p3 = pr[3][c];
          for (int j = 0; j < kCols; ++j) {
            const T v = oc[j];
            const T t0 = p0 - v, t1 = p1 - v, t2 = p2 - v, t3 = p3 - v;
            acc[0][j] += t0 * t0;
            acc[1][j] += t1 * t1;
            acc[2][j] += t2 * t2;
            acc[3][j] += t3 * t3;
          }
        }
      } else {
        for (int64_t c = 0; c < d; ++c) {
          const T* oc = oT + c * ldo + j0;
          for (int r = 0; r < kRows; ++r) {
            const T pc = pr[r][c];
            for (int64_t j = 0; j < jn; ++j) {
              const T t = pc - oc[j];
              acc[r][j] += t * t;
            }
          }
        }
      }
      for (int64_t r = 0; r < rn; ++r) {
        T* dst = out + (r0 + r) * ldout + j0;
        if (apply_exp) {
          for (int64_t j = 0; j < jn; ++j) dst[j] = gaussian_of(acc[r][j]);
        } else {
          for (int64_t j = 0; j < jn; ++j) dst[j] = acc[r][j];
        }
      }
    }
  }
}

MMLINATTN_SIMD_CLONES
void dist_tile(const float* p, int64_t rows, int64_t d, const float* oT,
               int64_t ldo, int64_t cols, float* out, int64_t ldout,
               bool apply_exp) {
  dist_tile_impl(p, rows, d, oT, ldo, cols, out, ldout, apply_exp);
}

void dist_tile(const double* p, int64_t rows, int64_t d, const double* oT,
               int64_t ldo, int64_t cols, double* out, int64_t ldout,
               bool apply_exp) {
  dist_tile_impl(p, rows, d, oT, ldo, cols, out, ldout, apply_exp);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

// Work split of a fused product: (split, batch, row tile) items. A tile
// holds about kTileElems kernel entries (L2-sized): up to kTileCols columns
// and more rows when there are few columns, so that the per-tile GEMM calls
// stay large. Columns of a split are a multiple of the tile width.
struct TilePlan {
  int64_t tile_rows, tile_cols, row_tiles, splits, cols_per_split;
  int64_t items(int64_t batch) const { return splits * batch * row_tiles; }
};

TilePlan plan_tiles(int64_t batch, int64_t rows, int64_t cols) {
  TilePlan plan;
  plan.tile_cols = std::max<int64_t>(1, std::min(kTileCols, cols));
  plan.tile_rows = std::clamp<int64_t>(kTileElems / plan.tile_cols,
                                       kMinTileRows, kMaxTileRows);
  plan.tile_rows = std::max<int64_t>(1, std::min(plan.tile_rows, rows));
  plan.row_tiles = ceil_div(rows, plan.tile_rows);
  const int64_t base = batch * plan.row_tiles;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  plan.splits = 1;
  if (base < wanted)
    plan.splits =
        std::min(ceil_div(wanted, base), ceil_div(cols, plan.tile_cols));
  plan.splits = std::max<int64_t>(1, plan.splits);
  plan.cols_per_split =
      ceil_div(ceil_div(cols, plan.splits), plan.tile_cols) * plan.tile_cols;
  plan.splits = ceil_div(cols, plan.cols_per_split);
  return plan;
}

}  // namespace

at::Tensor gaussian_sqdist_forward_cpu(const at::Tensor& q,
                                       const at::Tensor& k, bool apply_exp) {
  const auto acc = mmlinattn::acc_type_of(q);
  const auto qa = q.to(acc).contiguous();                 // (B, N, d)
  const auto kT = k.to(acc).transpose(1, 2).contiguous();  // (B, d, M)
  const int64_t batch = q.size(0), n = q.size(1), m = k.size(1),
                d = q.size(2);
  auto out = at::empty({batch, n, m}, q.options());
  const int64_t row_blocks = ceil_div(n, kSqdistRows);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "gaussian_sqdist_forward_cpu",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        constexpr bool direct = std::is_same_v<acc_t, scalar_t>;
        const acc_t* q_ptr = qa.data_ptr<acc_t>();
        const acc_t* kT_ptr = kT.data_ptr<acc_t>();
        scalar_t* out_ptr = out.data_ptr<scalar_t>();
        at::parallel_for(0, batch * row_blocks, 1, [&](int64_t begin,
                                                       int64_t end) {
          std::vector<acc_t> buffer(direct ? 0 : kSqdistRows * m);
          for (int64_t item = begin; item < end; ++item) {
            const int64_t b = item / row_blocks;
            const int64_t r0 = (item % row_blocks) * kSqdistRows;
            const int64_t rn = std::min(kSqdistRows, n - r0);
            scalar_t* dst = out_ptr + (b * n + r0) * m;
            acc_t* tile =
                direct ? reinterpret_cast<acc_t*>(dst) : buffer.data();
            dist_tile(q_ptr + (b * n + r0) * d, rn, d, kT_ptr + b * d * m, m,
                      m, tile, m, apply_exp);
            if constexpr (!direct) {
              for (int64_t i = 0; i < rn * m; ++i)
                dst[i] = static_cast<scalar_t>(tile[i]);
            }
          }
        });
      });
  return out;
}

at::Tensor gaussian_kernel_matmul_forward_cpu(const at::Tensor& p,
                                              const at::Tensor& o,
                                              const at::Tensor& x) {
  const auto acc = mmlinattn::acc_type_of(p);
  const auto pa = p.to(acc).contiguous();                 // (B, R, d)
  const auto oT = o.to(acc).transpose(1, 2).contiguous();  // (B, d, C)
  const auto xa = x.to(acc).contiguous();                 // (B, C, e)
  const int64_t batch = p.size(0), rows = p.size(1), cols = o.size(1),
                d = p.size(2), e = x.size(2);
  const TilePlan plan = plan_tiles(batch, rows, cols);
  auto partial = at::zeros({plan.splits, batch, rows, e}, pa.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_forward_cpu", [&] {
    const scalar_t* p_ptr = pa.data_ptr<scalar_t>();
    const scalar_t* oT_ptr = oT.data_ptr<scalar_t>();
    at::parallel_for(0, plan.items(batch), 1, [&](int64_t begin,
                                                  int64_t end) {
      // OpenMP workers do not inherit the caller's grad mode: the tile
      // GEMMs below must not reach autograd (inputs may require grad)
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      auto kernel = at::empty({plan.tile_rows, plan.tile_cols}, pa.options());
      for (int64_t item = begin; item < end; ++item) {
        const int64_t rt = item % plan.row_tiles;
        const int64_t b = (item / plan.row_tiles) % batch;
        const int64_t s = item / (plan.row_tiles * batch);
        const int64_t r0 = rt * plan.tile_rows;
        const int64_t rn = std::min(plan.tile_rows, rows - r0);
        const int64_t c_end = std::min(cols, (s + 1) * plan.cols_per_split);
        auto y = partial[s][b].narrow(0, r0, rn);
        for (int64_t c0 = s * plan.cols_per_split; c0 < c_end;
             c0 += plan.tile_cols) {
          const int64_t cn = std::min(plan.tile_cols, c_end - c0);
          dist_tile(p_ptr + (b * rows + r0) * d, rn, d,
                    oT_ptr + b * d * cols + c0, cols, cn,
                    kernel.data_ptr<scalar_t>(), plan.tile_cols, true);
          y.addmm_(kernel.narrow(0, 0, rn).narrow(1, 0, cn),
                   xa[b].narrow(0, c0, cn));
        }
      }
    });
  });
  auto y = plan.splits == 1 ? partial[0] : partial.sum(0);
  return y.to(p.scalar_type());
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward_cpu(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  const auto acc = mmlinattn::acc_type_of(p);
  const auto pa = p.to(acc).contiguous();                 // (B, R, d)
  const auto oa = o.to(acc).contiguous();                 // (B, C, d)
  const auto oT = oa.transpose(1, 2).contiguous();        // (B, d, C)
  const auto aa = a.to(acc).contiguous();                 // (B, R, e)
  const auto ba = b.to(acc).contiguous();                 // (B, C, e)
  const int64_t batch = p.size(0), rows = p.size(1), cols = o.size(1),
                d = p.size(2), e = a.size(2);
  const TilePlan plan = plan_tiles(batch, rows, cols);
  auto grad_p = at::zeros({plan.splits, batch, rows, d}, pa.options());
  auto kb = with_kb ? at::zeros({plan.splits, batch, rows, e}, pa.options())
                    : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_backward_cpu", [&] {
    const scalar_t* p_ptr = pa.data_ptr<scalar_t>();
    const scalar_t* oT_ptr = oT.data_ptr<scalar_t>();
    at::parallel_for(0, plan.items(batch), 1, [&](int64_t begin,
                                                  int64_t end) {
      // OpenMP workers do not inherit the caller's grad mode: the tile
      // GEMMs below must not reach autograd (inputs may require grad)
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      auto kernel = at::empty({plan.tile_rows, plan.tile_cols}, pa.options());
      auto s_buf = at::empty({plan.tile_rows, plan.tile_cols}, pa.options());
      std::vector<scalar_t> row_sum(plan.tile_rows);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t rt = item % plan.row_tiles;
        const int64_t bh = (item / plan.row_tiles) % batch;
        const int64_t s = item / (plan.row_tiles * batch);
        const int64_t r0 = rt * plan.tile_rows;
        const int64_t rn = std::min(plan.tile_rows, rows - r0);
        const int64_t c_end = std::min(cols, (s + 1) * plan.cols_per_split);
        const scalar_t* p_rows = p_ptr + (bh * rows + r0) * d;
        auto dp = grad_p[s][bh].narrow(0, r0, rn);
        const auto a_rows = aa[bh].narrow(0, r0, rn);
        std::fill(row_sum.begin(), row_sum.end(), scalar_t(0));
        for (int64_t c0 = s * plan.cols_per_split; c0 < c_end;
             c0 += plan.tile_cols) {
          const int64_t cn = std::min(plan.tile_cols, c_end - c0);
          dist_tile(p_rows, rn, d, oT_ptr + bh * d * cols + c0, cols, cn,
                    kernel.data_ptr<scalar_t>(), plan.tile_cols, true);
          const auto k_tile = kernel.narrow(0, 0, rn).narrow(1, 0, cn);
          const auto b_cols = ba[bh].narrow(0, c0, cn);
          auto s_tile = s_buf.narrow(0, 0, rn).narrow(1, 0, cn);
          at::mm_out(s_tile, a_rows, b_cols.t());
          if (with_kb) kb[s][bh].narrow(0, r0, rn).addmm_(k_tile, b_cols);
          // s = K * (a . b); accumulate its row sums.
          scalar_t* s_ptr = s_buf.data_ptr<scalar_t>();
          const scalar_t* k_ptr = kernel.data_ptr<scalar_t>();
          for (int64_t r = 0; r < rn; ++r) {
            scalar_t sum = 0;
            for (int64_t j = 0; j < cn; ++j) {
              const scalar_t v = s_ptr[r * plan.tile_cols + j] *
                                 k_ptr[r * plan.tile_cols + j];
              s_ptr[r * plan.tile_cols + j] = v;
              sum += v;
            }
            row_sum[r] += sum;
          }
          dp.addmm_(s_tile, oa[bh].narrow(0, c0, cn));
        }
        // dp_r = sum_c s_rc o_c - (sum_c s_rc) p_r; linear in the split.
        scalar_t* dp_ptr = dp.data_ptr<scalar_t>();
        for (int64_t r = 0; r < rn; ++r)
          for (int64_t c = 0; c < d; ++c)
            dp_ptr[r * d + c] -= row_sum[r] * p_rows[r * d + c];
      }
    });
  });
  auto dp = plan.splits == 1 ? grad_p[0] : grad_p.sum(0);
  std::vector<at::Tensor> outs{dp.to(p.scalar_type()), at::Tensor()};
  if (with_kb)
    outs[1] = (plan.splits == 1 ? kb[0] : kb.sum(0)).to(p.scalar_type());
  return outs;
}

REGISTER_DEVICE_IMPL(gaussian_sqdist_forward_impl, CPU,
                     gaussian_sqdist_forward_cpu);
REGISTER_DEVICE_IMPL(gaussian_kernel_matmul_forward_impl, CPU,
                     gaussian_kernel_matmul_forward_cpu);
REGISTER_DEVICE_IMPL(gaussian_kernel_matmul_backward_impl, CPU,
                     gaussian_kernel_matmul_backward_cpu);
