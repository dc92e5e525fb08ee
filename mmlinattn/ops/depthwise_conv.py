# Copyright (c) mmlinattn contributors. All rights reserved.
"""Depthwise 2-D convolution (stride 1) with a compiled weight gradient.

FLatten's rank-restoring DWC (Han et al., "FLatten Transformer", ICCV 2023)
is a 5 x 5 depthwise conv. On the CPU, PyTorch runs its backward on oneDNN,
whose weight-gradient kernel for depthwise kernels other than 3 x 3 is slow,
and which computes the bias gradient with it: (4, 32, 56, 56) in fp32 on 2
threads took 0.94 ms for the weight and 2.2 ms for the bias gradient, 0.11
ms for the input gradient, 0.11 ms for the forward (2026-12-02, AMD EPYC,
AVX-512). Here the forward is ``F.conv2d``; backward takes the bias
gradient as a sum of the output gradient (0.02 ms), the weight gradient
from the CPU kernel of ``mmlinattn._ext`` (0.13-0.14 ms; 5.5-7.0x faster
than oneDNN's at FLatten-PVTv2-B0's 5 x 5 shapes, docs/ops.md; at 3 x 3
oneDNN's own kernel is as fast and keeps the whole backward) and the input
gradient as the forward conv of the flipped kernel (on FLatten's V, a
strided view, 0.16 vs 0.25 ms for oneDNN's backward-data kernel).

Dispatch: the compiled path runs for float32 / float64 CPU tensors in eager
mode with gradients, for kernels other than 3 x 3 and paddings smaller
than the kernel; otherwise (other devices or dtypes, autocast,
``torch.compile`` or tracing, inside :func:`~mmlinattn.ops.reference_ops`,
without the extension) :func:`depthwise_conv2d` is ``F.conv2d``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .ext_loader import ext_module, reference_forced

_EXT_HAS_OP = ext_module is not None and hasattr(
    ext_module, 'depthwise_conv2d_weight_grad')
# oneDNN's JIT depthwise backward covers 3 x 3 well (measured above)
_ONEDNN_KERNEL = (3, 3)


def depthwise_conv2d_weight_grad(grad: Tensor, input: Tensor,
                                 kernel_size: Tuple[int, int],
                                 padding: Tuple[int, int]) -> Tensor:
    """Weight gradient (C, 1, kh, kw) of a stride-1 depthwise conv of
    ``input`` (B, C, H, W) whose output has gradient ``grad``, from the
    compiled kernel (float32 / float64 CPU tensors)."""
    return ext_module.depthwise_conv2d_weight_grad(grad, input,
                                                   *kernel_size, *padding)


class _DepthwiseConv2d(Function):
    """``F.conv2d(x, weight, bias, padding=padding, groups=C)`` whose
    weight and bias gradients bypass oneDNN's weight-gradient kernel; the
    input gradient is the flipped kernel's forward conv (oneDNN's forward
    kernel, faster than its backward-data one on a strided ``x``)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                padding: Tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:  # the transposed conv: the flipped kernel's forward
            kh, kw = weight.shape[2:]
            grad_x = F.conv2d(
                grad, weight.flip((2, 3)), None,
                padding=(kh - 1 - ctx.padding[0], kw - 1 - ctx.padding[1]),
                groups=x.shape[1])
        if need_w:
            grad_w = depthwise_conv2d_weight_grad(grad, x, weight.shape[2:],
                                                  ctx.padding)
        if need_b:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _use_compiled(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                  padding: Tuple[int, int]) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (_EXT_HAS_OP and not reference_forced()
            and padding[0] < weight.shape[2] and padding[1] < weight.shape[3]
            and torch.is_grad_enabled()
            and any(t.requires_grad for t in tensors)
            and tuple(weight.shape[2:]) != _ONEDNN_KERNEL
            and all(t.device.type == 'cpu' and t.dtype == x.dtype
                    for t in tensors)
            and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def depthwise_conv2d(x: Tensor,
                     weight: Tensor,
                     bias: Optional[Tensor],
                     padding: Tuple[int, int]) -> Tensor:
    """Stride-1 depthwise conv: ``F.conv2d(x, weight, bias,
    padding=padding, groups=C)`` for x (B, C, H, W) and weight
    (C, 1, kh, kw), with the compiled weight gradient where it applies
    (module docstring). Values equal ``F.conv2d``'s; gradients equal
    autograd's up to float summation order."""
    if weight.shape[0] != x.shape[1] or weight.shape[1] != 1:
        raise ValueError(f'depthwise_conv2d needs a (C, 1, kh, kw) weight '
                         f'for {x.shape[1]} channels, got '
                         f'{tuple(weight.shape)}')
    padding = (int(padding[0]), int(padding[1]))
    if _use_compiled(x, weight, bias, padding):
        return _DepthwiseConv2d.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
