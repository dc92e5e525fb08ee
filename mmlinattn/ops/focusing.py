# Copyright (c) mmlinattn contributors. All rights reserved.
"""The focusing function of FLatten Transformer (Han, Pan, Han, Song, Huang:
"FLatten Transformer: Vision Transformer using Focused Linear Attention",
ICCV 2023, arXiv 2308.00442).

``phi_p(x) = ||t|| * t**p / ||t**p||`` with ``t = (ReLU(x) + 1e-6) / scale``,
norms over the last (channel) dim. ``phi_p`` is homogeneous of degree 1, so
t is divided by its row maximum before the power: the same value as the
paper's formula, but t**p can neither overflow nor make the denominator
vanish, for any ``p`` and in half precision.

Dispatch: the fused CPU kernel of ``mmlinattn._ext`` (one pass per row
instead of ~11 element-wise passes over the tensor; backward recomputes the
row from ``x``) runs for float32 / float64 CPU tensors with a per-channel
``scale``, in eager mode. Otherwise — other devices or dtypes, under
``torch.compile`` or tracing (inductor fuses the reference itself), with
``force_reference=True``, inside :func:`~mmlinattn.ops.reference_ops`, or
without the extension — :func:`focusing_function_reference` runs.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .ext_loader import ext_module, reference_forced

# Kernel offset added after ReLU, as in the official code
# (LeapLabTHU/FLatten-Transformer after the 2024-05 stability rewrite); the
# compiled kernel uses the same constant (focusing_ops.hpp).
KERNEL_EPS = 1e-6

_EXT_HAS_OP = ext_module is not None and hasattr(ext_module,
                                                 'focusing_forward')


def _focus(x: Tensor, scale: Tensor, p: float) -> Tensor:
    t = (F.relu(x) + KERNEL_EPS) / scale
    row_max = t.amax(dim=-1, keepdim=True)
    tau = t / row_max
    tau_p = tau.pow(p)
    return tau_p * (
        row_max * tau.norm(dim=-1, keepdim=True) /
        tau_p.norm(dim=-1, keepdim=True))


def _fused_forward(x: Tensor, scale: Tensor, p: float) -> Tensor:
    channels = x.shape[-1]
    return ext_module.focusing_forward(
        x.reshape(-1, channels), scale.reshape(channels), p).view(x.shape)


def _reference_backward(grad: Tensor, x: Tensor, scale: Tensor, p: float,
                        need_x: bool, need_scale: bool):
    t = (F.relu(x) + KERNEL_EPS) / scale
    tau = t / t.amax(dim=-1, keepdim=True)
    tau_pm1 = tau.pow(p - 1)
    tau_p = tau_pm1 * tau
    a = tau.norm(dim=-1, keepdim=True)  # ||tau||
    b = tau_p.norm(dim=-1, keepdim=True)  # ||tau**p||
    g_dot = (grad * tau_p).sum(dim=-1, keepdim=True)
    grad_t = (g_dot / (a * b)) * tau + (p * a / b) * tau_pm1 * (
        grad - (g_dot / b.square()) * tau_p)
    grad_x = grad_scale = None
    if need_x:
        grad_x = grad_t.div(scale).masked_fill_(x <= 0, 0)
    if need_scale:
        # dt/ds = -t / s, summed over the broadcast dims of scale
        grad_scale = (grad_t * t).div_(scale).neg_().sum_to_size(scale.shape)
    return grad_x, grad_scale


def scale_gradient(partials: Optional[Tensor],
                   scale: Tensor) -> Optional[Tensor]:
    """The scale's gradient, in its shape, from the (blocks, C) partial
    sums a compiled backward returns (``None`` stays ``None``)."""
    return None if partials is None else partials.sum(0).view(scale.shape)


def _fused_backward(grad: Tensor, x: Tensor, scale: Tensor, p: float,
                    need_x: bool, need_scale: bool):
    channels = x.shape[-1]
    grad_x, partials = ext_module.focusing_backward(
        grad.reshape(-1, channels), x.reshape(-1, channels),
        scale.reshape(channels), p, need_scale)
    return (grad_x.view(x.shape) if need_x else None,
            scale_gradient(partials, scale))


class _Focusing(Function):
    """phi_p with a hand-written backward that keeps only ``x`` and
    ``scale``; ``fused`` runs both passes in the compiled row kernels,
    otherwise in PyTorch operations.

    Autograd of the plain expression stores about six (N, C) tensors per
    call (ReLU mask, quotients, powers, norms); here backward recomputes
    t from ``x`` and applies the closed-form gradient of
    ``||t|| t**p / ||t**p||`` written in terms of tau = t / max(t), which
    is free of the row maximum (phi is homogeneous of degree 1).
    """

    @staticmethod
    def forward(ctx, x, scale, p, fused):
        ctx.save_for_backward(x, scale)
        ctx.p, ctx.fused = p, fused
        return (_fused_forward if fused else _focus)(x, scale, p)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        backward = _fused_backward if ctx.fused else _reference_backward
        return (*backward(grad, x, scale, ctx.p, ctx.needs_input_grad[0],
                          ctx.needs_input_grad[1]), None, None)


def _use_fused(x: Tensor, scale: Tensor) -> bool:
    return (_EXT_HAS_OP and not reference_forced()
            and x.device.type == 'cpu' and scale.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.float64)
            and scale.dtype == x.dtype and x.dim() >= 1
            and 1 <= scale.dim() <= x.dim() and x.shape[-1] > 0
            and scale.numel() == scale.shape[-1] == x.shape[-1]
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def focusing_function_reference(x: Tensor, scale: Tensor,
                                focusing_factor: float) -> Tensor:
    """phi_p(x) in PyTorch operations. With gradients, backward keeps only
    ``x`` and ``scale``; without, the plain expression runs (traceable and
    exportable)."""
    p = float(focusing_factor)
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        return _Focusing.apply(x, scale, p, False)
    return _focus(x, scale, p)


def focusing_function(x: Tensor,
                      scale: Tensor,
                      focusing_factor: float,
                      force_reference: bool = False) -> Tensor:
    """phi_p(x) = ||t|| * t**p / ||t**p|| with t = (ReLU(x) + 1e-6) / scale.

    Args:
        x: (..., C) features; the norms run over C.
        scale: positive divisor broadcasting against ``x`` (per channel,
            e.g. (1, 1, C), for the fused kernel).
        focusing_factor: the power p > 0.
        force_reference: always run :func:`focusing_function_reference`.
    """
    if not force_reference and _use_fused(x, scale):
        return _Focusing.apply(x, scale, float(focusing_factor), True)
    return focusing_function_reference(x, scale, focusing_factor)


def focusing_function_backward(grad: Tensor,
                               x: Tensor,
                               scale: Tensor,
                               focusing_factor: float,
                               need_scale: bool = True
                               ) -> Tuple[Tensor, Optional[Tensor]]:
    """Gradients (of x, of scale or None) of :func:`focusing_function` for
    the upstream ``grad``, recomputed from ``x`` (for autograd Functions
    that call the focusing function inside and save only its input)."""
    p = float(focusing_factor)
    if _use_fused(x, scale):
        return _fused_backward(grad, x, scale, p, True, need_scale)
    return _reference_backward(grad, x, scale, p, True, need_scale)


def focusing_backend(x: Tensor, scale: Tensor) -> str:
    """``'extension'`` if :func:`focusing_function` runs the fused kernel
    for these tensors, else ``'reference'``."""
    return 'extension' if _use_fused(x, scale) else 'reference'
