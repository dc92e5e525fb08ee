// Copyright (c) mmlinattn contributors. All rights reserved.
// Launchers of the CUDA Gaussian-kernel ops. Every size, grid and template
// choice comes from gaussian_kernel_cuda_plan.cuh (shared with the CPU
// emulation of the tests); this file converts and allocates tensors, issues
// the <<<...>>> calls of the plan and sums the column-split partials. Half
// and bfloat16 inputs are converted to fp32 (linear-size copies) and every
// kernel accumulates in fp32 (fp64 for fp64); only the N x M sqdist output
// is written directly in the input dtype.
// c10/cuda headers only: ATen/cuda/CUDAContext.h would pull in the cuBLAS /
// cuSPARSE headers, which a minimal CUDA toolkit lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "gaussian_kernel_cuda_plan.cuh"
#include "gaussian_kernel_ops.hpp"
#include "pytorch_cpp_helper.hpp"

using mmlinattn::acc_type_of;
using namespace mmlinattn::cuda;

namespace {

// kernel<<<grid, block, 0, current stream>>>(args...), for the plan's
// launch_* functions.
struct CudaLaunch {
  cudaStream_t stream;

  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), dim3 grid, dim3 block,
                  A... args) const {
    kernel<<<grid, block, 0, stream>>>(static_cast<P>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

int multiprocessors() {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

void check_grid(bool fits, int64_t blocks, const char* op) {
  TORCH_CHECK_VALUE(fits, op, ": ", blocks,
                    " thread blocks exceed the CUDA grid; split the batch");
}

// The fused kernel of plan on (B*h, L, C) tensors in the accumulation type
// T; returns the partial sums summed over the column splits, in dtype.
template <typename T>
std::vector<at::Tensor> run_fused(const FusedPlan& plan, const at::Tensor& p,
                                  const at::Tensor& o, const at::Tensor& f,
                                  const at::Tensor& a, at::ScalarType dtype,
                                  const char* op) {
  check_grid(plan.fits_grid(), plan.base_blocks, op);
  const auto out_shape = plan.out_shape();
  const auto kb_shape = plan.kb_shape();
  auto out = at::empty(out_shape, p.options());
  at::Tensor kb;
  if (plan.mode == kGradWithKb) kb = at::empty(kb_shape, p.options());
  launch_fused<T>(plan, p.data_ptr<T>(), o.data_ptr<T>(), f.data_ptr<T>(),
                  a.defined() ? a.data_ptr<T>() : nullptr, out.data_ptr<T>(),
                  kb.defined() ? kb.data_ptr<T>() : nullptr,
                  CudaLaunch{c10::cuda::getCurrentCUDAStream()});
  auto sum_splits = [&](const at::Tensor& partial) {
    return (plan.splits == 1 ? partial[0] : partial.sum(0)).to(dtype);
  };
  return {sum_splits(out), kb.defined() ? sum_splits(kb) : at::Tensor()};
}

}  // namespace

at::Tensor gaussian_sqdist_forward_cuda(const at::Tensor& q,
                                        const at::Tensor& k, bool apply_exp) {
  const char* op = "gaussian_sqdist_forward_cuda";
  c10::cuda::CUDAGuard guard(q.device());
  const auto acc = acc_type_of(q);
  const auto qa = q.to(acc).contiguous(), ka = k.to(acc).contiguous();
  const auto plan = plan_sqdist(q.size(0), q.size(1), k.size(1),
                                static_cast<int>(q.size(2)));
  check_grid(plan.fits_grid(), plan.blocks, op);
  auto out = at::empty({plan.batch, plan.n, plan.m}, q.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(),
      "gaussian_sqdist_forward_cuda", [&] {
        using T = acc_type_t<scalar_t>;
        launch_sqdist(plan, apply_exp, qa.data_ptr<T>(), ka.data_ptr<T>(),
                      out.data_ptr<scalar_t>(),
                      CudaLaunch{c10::cuda::getCurrentCUDAStream()});
      });
  return out;
}

at::Tensor gaussian_kernel_matmul_forward_cuda(const at::Tensor& p,
                                               const at::Tensor& o,
                                               const at::Tensor& x) {
  const char* op = "gaussian_kernel_matmul_forward_cuda";
  if (!fused_supported(kForward, p.size(2), x.size(2)))
    return gaussian_kernel_matmul_forward_chunked(p, o, x);
  c10::cuda::CUDAGuard guard(p.device());
  const auto acc = acc_type_of(p);
  const auto pa = p.to(acc).contiguous(), oa = o.to(acc).contiguous(),
             xa = x.to(acc).contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_forward_cuda", [&] {
    const auto plan = plan_fused<scalar_t>(
        kForward, p.size(0), p.size(1), o.size(1),
        static_cast<int>(p.size(2)), static_cast<int>(x.size(2)),
        multiprocessors());
    out = run_fused<scalar_t>(plan, pa, oa, xa, at::Tensor(),
                              p.scalar_type(), op)[0];
  });
  return out;
}

std::vector<at::Tensor> gaussian_kernel_matmul_backward_cuda(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb) {
  const char* op = "gaussian_kernel_matmul_backward_cuda";
  const FusedMode mode = with_kb ? kGradWithKb : kGrad;
  if (!fused_supported(mode, p.size(2), a.size(2)))
    return gaussian_kernel_matmul_backward_chunked(p, o, a, b, with_kb);
  c10::cuda::CUDAGuard guard(p.device());
  const auto acc = acc_type_of(p);
  const auto pa = p.to(acc).contiguous(), oa = o.to(acc).contiguous(),
             aa = a.to(acc).contiguous(), ba = b.to(acc).contiguous();
  std::vector<at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(acc, "gaussian_kernel_matmul_backward_cuda", [&] {
    const auto plan = plan_fused<scalar_t>(
        mode, p.size(0), p.size(1), o.size(1), static_cast<int>(p.size(2)),
        static_cast<int>(a.size(2)), multiprocessors());
    grads = run_fused<scalar_t>(plan, pa, oa, ba, aa, p.scalar_type(), op);
  });
  return grads;
}
