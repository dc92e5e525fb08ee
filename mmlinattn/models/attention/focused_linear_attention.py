# Copyright (c) mmlinattn contributors. All rights reserved.
"""Focused linear attention of FLatten Transformer.

Han, Pan, Han, Song, Huang: "FLatten Transformer: Vision Transformer using
Focused Linear Attention", ICCV 2023 (arXiv 2308.00442).
"""
import math
from contextlib import nullcontext
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch.nn.init import trunc_normal_

from mmlinattn.ops.depthwise_conv import depthwise_conv2d
from mmlinattn.ops.ext_loader import reference_forced, reference_ops
from mmlinattn.ops.focused_linear import (focused_linear_attention,
                                          focused_linear_attention_backward)
from mmlinattn.ops.focusing import focusing_function
from mmlinattn.registry import register_model
from ..utils import (Linear, hand_written_backward_applies, head_dims,
                     nchw_as_tokens, resize_grid_table_on_load,
                     resize_pos_embed, run_in_float32, spatial_reduction,
                     tokens_as_nchw)

Grid = Tuple[int, int]


class _FocusedLinearCore(torch.autograd.Function):
    """:func:`~mmlinattn.ops.focused_linear_attention` (phi(q), phi(k) and
    the normalised products) as one autograd node that keeps q, k, v, the
    (d, d + 1) products and the normaliser; backward is
    :func:`~mmlinattn.ops.focused_linear_attention_backward`, which
    recomputes phi (the fused CPU kernels where they apply, both ways).

    Autograd of the composition also keeps phi(q), phi(k) and the (N, d)
    numerator, three more (B, N, C) tensors per layer. Same forward values
    (the same operations); gradients equal autograd's up to float summation
    order. A forward inside :func:`~mmlinattn.ops.reference_ops` gets its
    backward from the references too, wherever backward runs.
    """

    @staticmethod
    def forward(ctx, q, k, v, scale, focusing_factor, num_heads):
        out, kv, normaliser = focused_linear_attention(
            q, k, v, scale, focusing_factor, num_heads)
        ctx.save_for_backward(q, k, v, scale, kv, normaliser)
        ctx.focusing_factor, ctx.num_heads = focusing_factor, num_heads
        ctx.reference = reference_forced()
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        with reference_ops() if ctx.reference else nullcontext():
            return (*focused_linear_attention_backward(
                grad, *ctx.saved_tensors, ctx.focusing_factor,
                ctx.num_heads, ctx.needs_input_grad[3]), None, None)


def _check_grid(name: str, grid: Sequence[int]) -> Grid:
    if (len(grid) != 2 or not all(isinstance(s, int) for s in grid)
            or min(grid) < 1):
        raise ValueError(f'{name} must be two positive ints (H, W), '
                         f'got {grid!r}')
    return int(grid[0]), int(grid[1])


@register_model()
class FocusedLinearAttention(BaseModule):
    """Focused linear attention (FLatten, ICCV 2023) with depthwise-conv
    rank restoration.

    ``O = norm_rows(phi_p(Q) phi_p(K)^T) V + DWC(V)`` evaluated as
    ``phi_p(Q) (phi_p(K)^T V)`` in O(N d^2): ``phi_p`` is
    :func:`~mmlinattn.ops.focusing_function` (a fused CPU kernel) with a
    learnable per-channel ``scale`` (softplus) shared by q and k, a
    learnable ``positional_encoding`` is
    added to K before the kernel, the normaliser is
    ``phi(q_i) . mean_j phi(k_j) + 1e-6`` and the key-value product is
    ``(K n^-1/2)^T (V n^-1/2)`` (the official fp16-safe form), and ``DWC`` is
    one ``kernel_size`` depthwise conv of ``head_dim`` channels shared by all
    heads. Parameter names follow the official checkpoints (``q``/``kv`` or
    ``qkv``, ``scale``, ``positional_encoding``, ``dwc``, ``sr``, ``norm``,
    ``proj``).

    The token grid is passed to :meth:`forward` explicitly, so any H x W
    works; ``positional_encoding`` is learnt for ``key_grid`` and resized
    (``pos_interp_mode``, default bicubic as the official 224->384
    fine-tune) when the key grid differs; it is used as is when it does not.
    A checkpoint table learnt on another square grid is resized on load.

    Args:
        embed_dims: channels C.
        num_heads: heads h (head dim C / h).
        key_grid: (H, W) grid of key tokens that ``positional_encoding`` is
            learnt for (the pretraining grid: PVT stage grid // ``sr_ratio``,
            Swin window, CSwin stripe). ``None``: ``grid // sr_ratio`` when
            ``grid`` is given, else no positional encoding.
        grid: the host stage's pretraining token grid (a host fact).
        qkv_layout: ``'qkv'``: one ``qkv`` Linear(C, 3C) split [q|k|v]
            (Swin, CSwin); ``'q_kv'``: ``q`` Linear(C, C) and ``kv``
            Linear(C, 2C) split [k|v] (PVT, PVTv2); ``None``: ``'q_kv'``
            with spatial reduction, else ``'qkv'``.
        qkv_bias: bias of the q/k/v projections.
        sr_ratio: PVT spatial reduction of keys/values (``sr`` Conv2d with
            kernel = stride = ``sr_ratio`` then LayerNorm ``norm``); DWC then
            sees V linearly interpolated back to N tokens along the
            flattened axis, as upstream. Needs ``qkv_layout='q_kv'``.
        focusing_factor: p > 0 (3 in every released model).
        kernel_size: odd DWC kernel size (5 in every released model).
        proj_drop: dropout after ``proj``.
        lepe: add CSWin's locally-enhanced positional encoding, a 3 x 3
            depthwise conv ``lepe`` on V, before ``proj`` (FLatten-CSwin).
        fp32_attention: compute the positional encoding, focusing function,
            normaliser and the two matmuls in float32 even under autocast or
            for a half-precision model; the projections and DWC keep the
            input dtype. No effect on float32 / float64 inputs.
        pos_interp_mode: ``F.interpolate`` mode for resizing
            ``positional_encoding``.
        init_cfg: mmengine init config. Linear weights are initialised
            trunc_normal(std=0.02) with zero bias, ``scale`` and
            ``positional_encoding`` with zeros (official init) at
            construction.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 key_grid: Optional[Sequence[int]] = None,
                 grid: Optional[Sequence[int]] = None,
                 qkv_layout: Optional[str] = None,
                 qkv_bias: bool = True,
                 sr_ratio: int = 1,
                 focusing_factor: float = 3.,
                 kernel_size: int = 5,
                 proj_drop: float = 0.,
                 lepe: bool = False,
                 fp32_attention: bool = True,
                 pos_interp_mode: str = 'bicubic',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        head_dims(embed_dims, num_heads)
        if not (isinstance(focusing_factor, (int, float))
                and math.isfinite(focusing_factor) and focusing_factor > 0):
            raise ValueError(
                'focusing_factor must be a finite number > 0 (it is the '
                'power p of the focusing function; p <= 0 flips or flattens '
                f'the attention), got {focusing_factor!r}')
        if (not isinstance(kernel_size, int) or kernel_size < 1
                or kernel_size % 2 == 0):
            raise ValueError(
                'kernel_size must be a positive odd int so that the DWC '
                'keeps the token grid with padding kernel_size // 2, got '
                f'{kernel_size!r}')
        if qkv_layout is None:
            qkv_layout = 'q_kv' if sr_ratio > 1 else 'qkv'
        if qkv_layout not in ('qkv', 'q_kv'):
            raise ValueError("qkv_layout must be 'qkv' or 'q_kv', got "
                             f'{qkv_layout!r}')
        if not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be an int >= 1, got {sr_ratio!r}')
        if sr_ratio > 1 and qkv_layout != 'q_kv':
            raise ValueError("sr_ratio > 1 (PVT spatial reduction) needs "
                             "qkv_layout='q_kv'")

        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.qkv_layout = qkv_layout
        self.sr_ratio = sr_ratio
        self.focusing_factor = float(focusing_factor)
        self.kernel_size = kernel_size
        self.fp32_attention = fp32_attention
        self.pos_interp_mode = pos_interp_mode

        if qkv_layout == 'qkv':
            self.qkv = Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        elif qkv_layout == 'q_kv':
            self.q = Linear(embed_dims, embed_dims, bias=qkv_bias)
            self.kv = Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims)

        self.scale = nn.Parameter(torch.zeros(1, 1, embed_dims))
        if key_grid is None and grid is not None:
            grid = _check_grid('grid', grid)
            key_grid = (grid[0] // sr_ratio, grid[1] // sr_ratio)
        if key_grid is None:
            self.key_grid = None
            self.positional_encoding = None
        else:
            self.key_grid = _check_grid('key_grid', key_grid)
            self.positional_encoding = nn.Parameter(
                torch.zeros(1, self.key_grid[0] * self.key_grid[1],
                            embed_dims))
        self.dwc = nn.Conv2d(
            self.head_dims,
            self.head_dims,
            kernel_size,
            padding=kernel_size // 2,
            groups=self.head_dims)
        self.lepe = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1,
            groups=embed_dims) if lepe else None
        self.proj = Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -------------------------------------------------------------- pieces
    def project(
            self, x: torch.Tensor,
            hw: Grid) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grid]:
        """(B, N, C) tokens on grid ``hw`` -> q (B, N, C), k and v
        (B, n, C) and the key grid (``hw`` reduced by ``sr_ratio``)."""
        B, N, C = x.shape
        H, W = hw
        if N != H * W:
            raise ValueError(f'FocusedLinearAttention got {N} tokens for a '
                             f'{H}x{W} grid; pass hw=(H, W) with H*W == N')
        if self.qkv_layout == 'qkv':
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return q, k, v, (H, W)
        q = self.q(x)
        kv_hw = (H, W)
        if self.sr_ratio > 1:
            x, kv_hw = spatial_reduction(x, hw, self.sr, self.norm,
                                         self.sr_ratio)
        k, v = self.kv(x).chunk(2, dim=-1)
        return q, k, v, kv_hw

    def key_positional_encoding(self, kv_hw: Grid) -> Optional[torch.Tensor]:
        """``positional_encoding`` for a key grid (resized only if it
        differs from ``key_grid``)."""
        if self.positional_encoding is None:
            return None
        return resize_pos_embed(
            self.positional_encoding,
            self.key_grid,
            kv_hw,
            mode=self.pos_interp_mode)

    def _positive_scale(self, q: torch.Tensor) -> torch.Tensor:
        """softplus(scale), promoted to q's dtype when that is wider (a half
        model's fp32 island then meets the fused kernel's one-dtype rule)."""
        scale = F.softplus(self.scale)
        return scale.to(torch.promote_types(scale.dtype, q.dtype))

    def focused_features(self, q: torch.Tensor, k: torch.Tensor,
                         kv_hw: Grid) -> Tuple[torch.Tensor, torch.Tensor]:
        """phi_p(q) and phi_p(k + positional_encoding), (B, *, C)."""
        pos = self.key_positional_encoding(kv_hw)
        if pos is not None:
            k = k + pos
        scale = self._positive_scale(q)
        return (focusing_function(q, scale, self.focusing_factor),
                focusing_function(k, scale, self.focusing_factor))

    def _linear_attention(self, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor, kv_hw: Grid) -> torch.Tensor:
        scale = self._positive_scale(q)
        pos = self.key_positional_encoding(kv_hw)
        k = k if pos is None else k + pos
        device = q.device.type
        if (hand_written_backward_applies()
                and q.dtype in (torch.float32, torch.float64)
                and not (torch.amp.is_autocast_available(device)
                         and torch.is_autocast_enabled(device))):
            return _FocusedLinearCore.apply(q, k, v, scale,
                                            self.focusing_factor,
                                            self.num_heads)
        return focused_linear_attention(q, k, v, scale, self.focusing_factor,
                                        self.num_heads)[0]

    def attend(self,
               q: torch.Tensor,
               k: torch.Tensor,
               v: torch.Tensor,
               hw: Grid,
               kv_hw: Optional[Grid] = None) -> torch.Tensor:
        """Attention plus DWC(V), before ``proj``.

        Args:
            q: (B, N, C) queries on grid ``hw``.
            k, v: (B, n, C) keys and values on grid ``kv_hw`` (default
                ``hw``).
        Returns:
            (B, N, C), in the dtype of ``v``.
        """
        B, N, C = q.shape
        kv_hw = hw if kv_hw is None else kv_hw
        n = k.shape[1]
        if N != hw[0] * hw[1] or n != kv_hw[0] * kv_hw[1]:
            raise ValueError(f'{N} queries / {n} keys do not match the grids '
                             f'{tuple(hw)} / {tuple(kv_hw)}')
        if self.fp32_attention and v.dtype in (torch.float16, torch.bfloat16):
            x = run_in_float32(self._linear_attention, q, k, v, kv_hw=kv_hw)
        else:
            x = self._linear_attention(q, k, v, kv_hw)
        return x + self._dwc(v, hw)

    def _dwc(self, v: torch.Tensor, hw: Grid) -> torch.Tensor:
        """Head-shared depthwise conv on V, (B, n, C) -> (B, N, C).

        The ``head_dims``-channel conv shared by the heads runs as one
        C-channel depthwise conv with its filters repeated per head, on the
        channels-last view of the tokens: the same sums without moving V
        into a (B * heads, d, H, W) map and back.
        """
        if v.shape[1] != hw[0] * hw[1]:
            # spatial reduction: 1-D linear interpolation along the tokens
            v = F.interpolate(
                v.transpose(1, 2), size=hw[0] * hw[1],
                mode='linear').transpose(1, 2)
        v = depthwise_conv2d(
            tokens_as_nchw(v, hw),
            self.dwc.weight.repeat(self.num_heads, 1, 1, 1),
            self.dwc.bias.repeat(self.num_heads),
            padding=(self.kernel_size // 2, ) * 2)
        return nchw_as_tokens(v)

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, N, C) tokens on the (H, W) grid ``hw`` -> (B, N, C)."""
        q, k, v, kv_hw = self.project(x, hw)
        x = self.attend(q, k, v, hw, kv_hw)
        if self.lepe is not None:
            x = x + nchw_as_tokens(self.lepe(tokens_as_nchw(v, hw)))
        return self.proj_drop(self.proj(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.positional_encoding is not None:
            resize_grid_table_on_load(state_dict,
                                      prefix + 'positional_encoding',
                                      self.positional_encoding, self.key_grid,
                                      self.pos_interp_mode)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'key_grid={self.key_grid}, sr_ratio={self.sr_ratio}, '
                f'focusing_factor={self.focusing_factor}, '
                f'kernel_size={self.kernel_size}, '
                f'fp32_attention={self.fp32_attention}')
