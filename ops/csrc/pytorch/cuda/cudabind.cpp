// Copyright (c) mmlinattn contributors. All rights reserved.
// Registers the CUDA kernels for the device-agnostic entry points.
#include "gaussian_kernel_ops.hpp"
#include "pytorch_device_registry.hpp"

at::Tensor gaussian_sqdist_forward_cuda(const at::Tensor& q,
                                        const at::Tensor& k, bool apply_exp);
at::Tensor gaussian_kernel_matmul_forward_cuda(const at::Tensor& p,
                                               const at::Tensor& o,
                                               const at::Tensor& x);
std::vector<at::Tensor> gaussian_kernel_matmul_backward_cuda(
    const at::Tensor& p, const at::Tensor& o, const at::Tensor& a,
    const at::Tensor& b, bool with_kb);

REGISTER_DEVICE_IMPL(gaussian_sqdist_forward_impl, CUDA,
                     gaussian_sqdist_forward_cuda);
REGISTER_DEVICE_IMPL(gaussian_kernel_matmul_forward_impl, CUDA,
                     gaussian_kernel_matmul_forward_cuda);
REGISTER_DEVICE_IMPL(gaussian_kernel_matmul_backward_impl, CUDA,
                     gaussian_kernel_matmul_backward_cuda);
