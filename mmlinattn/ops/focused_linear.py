# Copyright (c) mmlinattn contributors. All rights reserved.
"""Normalised focused linear attention of FLatten Transformer (Han, Pan, Han,
Song, Huang: "FLatten Transformer: Vision Transformer using Focused Linear
Attention", ICCV 2023, arXiv 2308.00442), per head of d = C / h channels::

    out_i = phi(q_i) (phi(K)^T V / n) / (phi(q_i) . mean_j phi(k_j) + 1e-6)

with ``phi`` the focusing function (:mod:`mmlinattn.ops.focusing`).

Unfused this is ~10 passes over (B, N, C) tensors: phi(q) and phi(k) written
out, two batched GEMMs (the key-value product, and q against it with the
mean key as an extra column), the slice and division, and the head
transposes. The CPU kernel of ``mmlinattn._ext`` focuses each block of rows
in cache and feeds it straight into register-tiled products, dividing by
the normaliser in the tile's epilogue (docs/ops.md has its timings). Its
values equal the reference's up to float rounding.

Dispatch: the kernel runs where the fused focusing kernel does (float32 /
float64 CPU tensors, a per-channel ``scale``, eager mode, outside
:func:`~mmlinattn.ops.reference_ops`), outside autocast, with at least one
key, and when autograd does not record, backward or forward mode (the kernel
has no derivative of its own: it runs under ``torch.no_grad`` and inside the
forward of autograd Functions such as FLatten's attention core).
Otherwise :func:`focused_linear_attention_reference` runs.

:func:`focused_linear_attention_backward` gives that core's gradients from
the forward's inputs, key-value product and normaliser: a second CPU kernel
recomputes phi(q) and phi(k) per block in cache and applies the closed-form
gradients there (unfused: ~5 batched GEMMs, the focusing backward of both
and a dozen passes over (B, N, C) tensors, as
:func:`focused_linear_attention_backward_reference` writes them). It runs
for the tensors the forward kernel takes, whatever autograd and autocast do
(it is called from a backward, and FLatten's core is not used under
autocast); gradient, key-value product and normaliser in another dtype than
q are an error either way (the kernel says which to cast).
"""
from typing import Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from .ext_loader import ext_module
from .focusing import (_use_fused, focusing_function,
                       focusing_function_backward, scale_gradient)

_EXT_HAS_OP = ext_module is not None and hasattr(ext_module,
                                                 'focused_linear_forward')
_EXT_HAS_BACKWARD = ext_module is not None and hasattr(
    ext_module, 'focused_linear_backward')

# Normaliser epsilon of the official code (LeapLabTHU/FLatten-Transformer
# after the 2024-05 stability rewrite); the kernel uses the same constant
# (focused_linear_ops.hpp).
NORMALISER_EPS = 1e-6


def normalised_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor,
                         num_heads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(q (k^T v) / n) / (q . mean(k) + eps)`` per head for focused
    features q (B, N, C), k (B, n, C) and values v (B, n, C); returns the
    (B, N, C) output, the (B, h, d, d + 1) key-value product with the mean
    key as its last column, and the (B, h, N, 1) normaliser."""
    B, N, C = phi_q.shape
    n = phi_k.shape[1]
    d = C // num_heads
    q = phi_q.view(B, N, num_heads, d).transpose(1, 2)
    k = phi_k.view(B, n, num_heads, d).transpose(1, 2)
    v = v.reshape(B, n, num_heads, d).transpose(1, 2)
    if q.dtype in (torch.float16, torch.bfloat16):
        # the official fp16-safe form: operands scaled by n^-1/2 each
        kv = (k.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
    else:  # same value; scaling the (d, d) result saves two copies
        kv = (k.transpose(-2, -1) @ v) / n
    # One pass over q for numerator and normaliser: the mean key is an
    # extra column next to the (d, d) key-value product.
    kv = torch.cat([kv, k.mean(dim=-2).unsqueeze(-1)], dim=-1)
    out = q @ kv
    normaliser = out[..., d:] + NORMALISER_EPS
    out = out[..., :d] / normaliser
    return out.transpose(1, 2).reshape(B, N, C), kv, normaliser


def focused_linear_attention_reference(
        q: Tensor, k: Tensor, v: Tensor, scale: Tensor, focusing_factor: float,
        num_heads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`normalised_attention` of ``focusing_function(q)`` and
    ``focusing_function(k)``, in PyTorch operations (differentiable)."""
    return normalised_attention(
        focusing_function(q, scale, focusing_factor),
        focusing_function(k, scale, focusing_factor), v, num_heads)


def _records_gradients(*tensors: Tensor) -> bool:
    """Whether autograd records through ``tensors``: backward mode, or
    forward mode (dual tensors carry a tangent)."""
    return ((torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            or any(fwAD.unpack_dual(t).tangent is not None for t in tensors))


def _kernel_takes(q: Tensor, k: Tensor, v: Tensor, scale: Tensor) -> bool:
    """The conditions both kernels share."""
    return (_use_fused(q, scale) and q.dim() == 3 and k.dim() == 3
            and k.shape == v.shape and k.shape[1] > 0
            and k.dtype == v.dtype == q.dtype
            and k.device.type == v.device.type == 'cpu')


def _use_compiled(q: Tensor, k: Tensor, v: Tensor, scale: Tensor) -> bool:
    return (_EXT_HAS_OP and _kernel_takes(q, k, v, scale)
            and not torch.is_autocast_enabled('cpu')
            and not _records_gradients(q, k, v, scale))


def focused_linear_attention(q: Tensor, k: Tensor, v: Tensor, scale: Tensor,
                             focusing_factor: float,
                             num_heads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Normalised focused linear attention, from the compiled kernel where
    it applies (module docstring), else from
    :func:`focused_linear_attention_reference`.

    Args:
        q: (B, N, C) queries before the focusing function.
        k, v: (B, n, C) keys (positional encoding already added) and values.
        scale: positive per-channel divisor of the focusing function,
            broadcasting against q ((C,) or (1, 1, C)).
        focusing_factor: the power p > 0.
        num_heads: heads h; C / h channels each.

    Returns:
        out (B, N, C), the (B, h, d, d + 1) key-value product with the mean
        focused key as its last column, and the (B, h, N, 1) normaliser.
    """
    if q.shape[-1] % num_heads:
        raise ValueError(f'{num_heads} heads do not divide the '
                         f'{q.shape[-1]} channels of q')
    if _use_compiled(q, k, v, scale):
        return tuple(
            ext_module.focused_linear_forward(q, k, v,
                                              scale.reshape(q.shape[-1]),
                                              float(focusing_factor),
                                              num_heads))
    return focused_linear_attention_reference(q, k, v, scale, focusing_factor,
                                              num_heads)


def focused_linear_attention_backward_reference(
        grad: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: Tensor,
        kv: Tensor, normaliser: Tensor, focusing_factor: float,
        num_heads: int, need_scale: bool = True
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """:func:`focused_linear_attention_backward` in PyTorch operations:
    phi recomputed by the focusing function, the closed-form gradients of
    the two products and the division as batched GEMMs."""
    p, h = focusing_factor, num_heads
    B, N, C = q.shape
    n, d = k.shape[1], C // h
    phi_q = focusing_function(q, scale, p).view(B, N, h, d).transpose(1, 2)
    phi_k = focusing_function(k, scale, p).view(B, n, h, d).transpose(1, 2)
    v_h = v.reshape(B, n, h, d).transpose(1, 2)
    g = grad.reshape(B, N, h, d).transpose(1, 2)
    numerator = phi_q @ kv[..., :d]
    # d out / d [numerator | normaliser], then through out = phi_q @ kv
    g_out = torch.cat([
        g / normaliser,
        -(g * numerator).sum(-1, keepdim=True) / normaliser.square()
    ], dim=-1)  # (B, h, N, d + 1)
    g_phi_q = g_out @ kv.transpose(-2, -1)
    g_kv = phi_q.transpose(-2, -1) @ g_out  # (B, h, d, d + 1)
    g_kv_d = g_kv[..., :d] / n
    g_phi_k = v_h @ g_kv_d.transpose(-2, -1) + g_kv[..., d:].transpose(
        -2, -1) / n
    g_v = phi_k @ g_kv_d
    g_q, g_scale_q = focusing_function_backward(
        g_phi_q.transpose(1, 2).reshape(B, N, C), q, scale, p, need_scale)
    g_k, g_scale_k = focusing_function_backward(
        g_phi_k.transpose(1, 2).reshape(B, n, C), k, scale, p, need_scale)
    return (g_q, g_k, g_v.transpose(1, 2).reshape(B, n, C),
            g_scale_q + g_scale_k if need_scale else None)


def focused_linear_attention_backward(
        grad: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: Tensor,
        kv: Tensor, normaliser: Tensor, focusing_factor: float,
        num_heads: int, need_scale: bool = True
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Gradients of :func:`focused_linear_attention`'s output for the
    upstream ``grad`` (B, N, C), from the compiled kernel where it applies
    (module docstring), else from
    :func:`focused_linear_attention_backward_reference`.

    Args:
        grad: (B, N, C) gradient of ``out``.
        q, k, v, scale, focusing_factor, num_heads: the forward's inputs.
        kv, normaliser: the forward's key-value product (with the mean key
            as its last column) and normaliser.
        need_scale: also return the gradient of ``scale``.

    Returns:
        The gradients of q, k, v and of ``scale`` (in its shape; ``None``
        unless ``need_scale``). Not differentiable itself.
    """
    if _EXT_HAS_BACKWARD and _kernel_takes(q, k, v, scale):
        channels = q.shape[-1]
        g_q, g_k, g_v, partials = ext_module.focused_linear_backward(
            grad, q, k, v, scale.reshape(channels), kv, normaliser,
            float(focusing_factor), num_heads, need_scale)
        return g_q, g_k, g_v, scale_gradient(partials, scale)
    return focused_linear_attention_backward_reference(
        grad, q, k, v, scale, kv, normaliser, focusing_factor, num_heads,
        need_scale)
