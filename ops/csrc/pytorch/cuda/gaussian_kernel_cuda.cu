// Copyright (c) mmlinattn contributors. All rights reserved.
// Launchers of the CUDA Gaussian-kernel ops. Half and bfloat16 inputs are
// converted to fp32 (linear-size copies) and every kernel accumulates in
// fp32 (fp64 for fp64); only the N x M sqdist output is written directly in
// the input dtype.
// c10/cuda headers only: ATen/cuda/CUDAContext.h would pull in the cuBLAS /
// cuSPARSE headers, which a minimal CUDA toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <limits>

#include "gaussian_kernel_cuda_kernel.cuh"
#include "gaussian_kernel_ops.hpp"
#include "pytorch_cpp_helper.hpp"

using mmlinattn::acc_type_of;
using namespace mmlinattn::cuda;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_grid(int64_t blocks, const char* op) {
  TORCH_CHECK_VALUE(blocks <= std::numeric_limits<int32_t>::max(), op, ": ",
                    blocks,
                    " thread blocks exceed the CUDA grid; split the batch");
}

// Column splits so that about eight blocks per SM are in flight; every
// split covers at least four shared-memory tiles.
void plan_splits(int64_t base_blocks, int64_t cols, int tile_cols,
                 int64_t* splits, int64_t* cols_per_split) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t wanted = 8 * static_cast<int64_t>(sms);
  int64_t n = 1;
  if (base_blocks < wanted)
    n = std::min(ceil_div(wanted, base_blocks), ceil_div(cols, 4 * tile_cols));
  n = std::max<int64_t>(1, std::min<int64_t>(n, 65535));
  *cols_per_split = ceil_div(ceil_div(cols, n), tile_cols) * tile_cols;
  *splits = ceil_div(cols, *cols_per_split);
}

template <typename T, int D, int E, int kMode>
void launch_fused(const at::Tensor& p, const at::Tensor& o,
                  const at::Tensor& f, const at::Tensor& a, at::Tensor& out,
                  at::Tensor& out_kb, const char* op) {
  const int64_t batch = p.size(0), rows = p.size(1), cols = o.size(1);
  const int d = static_cast<int>(p.size(2)), e = static_cast<int>(f.size(2));
  const int64_t row_blocks = ceil_div(rows, kOwnerThreads);
  const int e_chunks = kMode == kForward ? static_cast<int>(ceil_div(e, E)) : 1;
  const int64_t base_blocks = batch * row_blocks * e_chunks;
  check_grid(base_blocks, op);
  int64_t splits, cols_per_split;
  plan_splits(base_blocks, cols, FusedTileCols<T>::value, &splits,
              &cols_per_split);
  out = at::empty({splits, batch, rows, kMode == kForward ? e : d},
                  p.options());
  if (kMode == kGradWithKb)
    out_kb = at::empty({splits, batch, rows, e}, p.options());
  const dim3 grid(static_cast<unsigned>(base_blocks),
                  static_cast<unsigned>(splits));
  gaussian_kernel_matmul_cuda_kernel<T, D, E, kMode>
      <<<grid, kOwnerThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          p.data_ptr<T>(), o.data_ptr<T>(), f.data_ptr<T>(),
          a.defined() ? a.data_ptr<T>() : nullptr, out.data_ptr<T>(),
          out_kb.defined() ? out_kb.data_ptr<T>() : nullptr, rows, cols, d, e,
          row_blocks, e_chunks, cols_per_split, out.stride(0),
          out_kb.defined() ? out_kb.stride(0) : 0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// D, E: the compile-time bounds (32 or 64) of d and e.
template <typename T, int kMode>
void dispatch_fused(int d, int e, const at::Tensor& p, const at::Tensor& o,
                    const at::Tensor& f, const at::Tensor& a, at::Tensor& out,
                    at::Tensor& out_kb, const char* op) {
  const bool small_d = d <= 32, small_e = e <= 32;
  if (small_d && small_e)
    launch_fused<T, 32, 32, kMode>(p, o, f, a, out, out_kb, op);
  else if (small_d)
    launch_fused<T, 32, 64, kMode>(p, o, f, a, out, out_kb, op);
  else if (small_e)
    launch_fused<T, 64, 32, kMode>(p, o, f, a, out, out_kb, op);
  else
    launch_fused<T, 64, 64, kMode>(p, o, f, a, out, out_kb, op);
}

at::Tensor sum_splits(const at::Tensor& partial, at::ScalarType dtype) {
  return (partial.size(0) == 1 ? partial[0] : partial.sum(0)).to(dtype);
}

}  // namespace

at::Tensor gaussian_sqdist_forward_cuda(const at::Tensor& q,
                                        const at::Tensor& k, bool apply_exp) {
  const char* op = "gaussian_sqdist_forward_cuda";
  c10::cuda::CUDAGuard guard(q.device());
  const auto acc = acc_type_of(q);
  const auto qa = q.to(acc).contiguous(), ka = k.to(acc).contiguous();
  const int64_t batch = q.size(0), n = q.size(1), m = k.size(1);
  const int d = static_cast<int>(q.size(2));
  auto out = at::empty({batch, n, m}, q.options());
  const int64_t row_tiles = ceil_div(n, kSqdistTile);
  const int64_t col_tiles = ceil_div(m, kSqdistTile);
  const int64_t blocks = batch * row_tiles * col_tiles;
  check_grid(blocks, op);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "gaussian_sqdist_forward_cuda",
      [&] {
        using T = std::conditional_t<std::is_same_v<scalar_t, double>, double,
                                     float>;
        auto kernel = apply_exp
                          ? gaussian_sqdist_cuda_kernel<T, scalar_t, true>
                          : gaussian_sqdist_cuda_kernel<T, scalar_t, false>;
        kernel<<<static_cast<unsigned>(blocks), kSqdistThreads, 0, stream>>>(
            qa.data_ptr<T>(), ka.data_ptr<T>(), out.data_ptr<scalar_t>(), n,
            m, d, row_tiles, col_tiles);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

at::Tensor gaussian_kernel_matmul_forward_cuda(const at::Tensor& p,
                                               const at::Tensor& o,
                                               const at::Tensor& x) {
  const char* op = "gaussian_kernel_matmul_forward_cuda";
  const int d = static_cast<int>(p.size(2)), e = static_cast<int>(x.size(2));
  if (d > 64) return gaussian_kernel_matmul_forward_chunked(p, o, x);
  c10::cuda::CUDAGuard guard(p.device());
  const auto acc = acc_type_of(p);
  const auto pa = p.to(acc).contiguous(), oa = o.to(acc).contiguous(),
             xa = x.to(acc).contiguous();
  at::Tensor out, unused;
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_forward_cuda", [&] {
    // e above 64 runs in chunks of 64 features (grid.x), d <= 64 in registers.
    dispatch_fused<scalar_t, kForward>(d, std::min(e, 64), pa, oa, xa,
                                       at::Tensor(), out, unused, op);
  });
  return sum_splits(out, p.scalar_type());
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward_cuda(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  const char* op = "gaussian_kernel_matmul_backward_cuda";
  const int d = static_cast<int>(p.size(2)), e = static_cast<int>(a.size(2));
  // The backward needs the whole feature row a_r in registers.
  if (d > 64 || e > 64)
    return gaussian_kernel_matmul_backward_chunked(p, o, a, b, with_kb);
  c10::cuda::CUDAGuard guard(p.device());
  const auto acc = acc_type_of(p);
  const auto pa = p.to(acc).contiguous(), oa = o.to(acc).contiguous(),
             aa = a.to(acc).contiguous(), ba = b.to(acc).contiguous();
  at::Tensor grad, kb;
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_backward_cuda", [&] {
    if (with_kb)
      dispatch_fused<scalar_t, kGradWithKb>(d, e, pa, oa, ba, aa, grad, kb,
                                            op);
    else
      dispatch_fused<scalar_t, kGrad>(d, e, pa, oa, ba, aa, grad, kb, op);
  });
  return {sum_splits(grad, p.scalar_type()),
          with_kb ? sum_splits(kb, p.scalar_type()) : at::Tensor()};
}
