# Copyright (c) mmlinattn contributors. All rights reserved.
"""HiLo attention of LITv2.

Pan, Cai, Zhuang. "Fast Vision Transformers with HiLo Attention."
NeurIPS 2022. https://arxiv.org/abs/2205.13213
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import Linear, head_dims, nchw_as_tokens, tokens_as_nchw


# Up to this many keys (Lo-Fi at a 14x14 stage has 49) an explicit softmax
# beats SDPA's fused CPU kernel: 1.3-1.4x forward, 1.5-2x forward + backward
# at LITv2's 14x14 shapes; from 196 keys on the fused kernel is faster.
_FEW_KEYS = 64


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` written out (short key sequences)."""
    return ((q * scale) @ k.transpose(-2, -1)).softmax(-1) @ v


@register_model()
class HiLoAttention(nn.Module):
    """HiLo attention: high-frequency window attention on some heads and
    low-frequency global attention on the others.

    The ``num_heads`` heads are split into ``l_heads = int(num_heads *
    alpha)`` Lo-Fi heads (truncation, as in the official code) and
    ``h_heads = num_heads - l_heads`` Hi-Fi heads, all of ``embed_dims //
    num_heads`` channels and sharing the scale ``head_dim ** -0.5``:

    * **Hi-Fi** (``h_qkv``, ``h_proj``): softmax attention inside
      non-overlapping ``window_size x window_size`` windows.
    * **Lo-Fi** (``l_q``, ``l_kv``, ``l_proj``): queries from every token
      attend to keys/values computed from the ``window_size x window_size``
      average-pooled map (pooling before the projection).

    Each branch projects inside its own sub-space (no shared output
    projection) and the output is ``[hifi | lofi]`` along channels.
    ``window_size == 1`` is plain global multi-head self-attention (all heads
    Lo-Fi, no pooling). Maps whose sides are not multiples of
    ``window_size`` are zero-padded right/bottom (after the block's norm,
    unmasked, included in the pooling) and cropped back, exactly like the
    official detection/segmentation code, so any ``H x W`` works, including
    maps smaller than one window. There is no dropout inside HiLo (the
    official layer accepts dropout rates but never applies them).

    Parameter names and layouts equal the official ``HiLo`` so checkpoints
    load 1:1. Both branches use :func:`F.scaled_dot_product_attention`
    (no mask, explicit scale: the same softmax attention).

    Args:
        embed_dims: channels ``C`` (divisible by ``num_heads``).
        num_heads: total number of heads.
        window_size: Hi-Fi window and Lo-Fi pooling size ``s``.
        alpha: fraction of heads given to Lo-Fi, in ``[0, 1]``.
        qkv_bias: bias in ``h_qkv``, ``l_q`` and ``l_kv``.
        qk_scale: overrides ``head_dim ** -0.5``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int = 2,
                 alpha: float = 0.9,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None):
        super().__init__()
        head_dims(embed_dims, num_heads)
        if not 0. <= alpha <= 1.:
            raise ValueError(f'alpha is the fraction of heads given to Lo-Fi '
                             f'attention and must be in [0, 1], got {alpha}')
        if int(window_size) != window_size or window_size < 1:
            raise ValueError('window_size must be a positive int (1 = global '
                             f'attention), got {window_size}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.window_size = int(window_size)
        self.alpha = alpha
        self.head_dims = embed_dims // num_heads
        if self.window_size == 1:
            self.l_heads = num_heads
        else:
            self.l_heads = int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim = self.l_heads * self.head_dims
        self.h_dim = self.h_heads * self.head_dims
        self.scale = qk_scale or self.head_dims**-0.5

        if self.l_heads > 0:
            self.l_q = Linear(embed_dims, self.l_dim, bias=qkv_bias)
            self.l_kv = Linear(embed_dims, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = Linear(embed_dims, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = Linear(self.h_dim, self.h_dim)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, window_size='
                f'{self.window_size}, lofi_heads={self.l_heads}, '
                f'hifi_heads={self.h_heads}')

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """Attend over tokens ``x`` (B, H*W, C) of an ``hw = (H, W)`` map,
        row-major; returns (B, H*W, C)."""
        B, N, C = x.shape
        H, W = hw
        if N != H * W:
            raise ValueError(f'HiLoAttention got {N} tokens for a {H}x{W} '
                             'map; pass hw=(H, W) of the token grid')
        x = x.reshape(B, H, W, C)
        ws = self.window_size
        pad_b, pad_r = (-H) % ws, (-W) % ws
        # Exporters trace one branch: always pad there (a no-op when the
        # map divides), so the graph is valid for every input size.
        padded = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if (
            torch.onnx.is_in_onnx_export() or pad_b or pad_r) else x
        outs = []
        if self.h_heads > 0:
            hifi = self._hifi(padded)
            outs.append(hifi[:, :H, :W].reshape(B, N, self.h_dim))
        if self.l_heads > 0:
            outs.append(self._lofi(x, padded))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def _hifi(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention on the padded (B, Hp, Wp, C) map."""
        B, Hp, Wp, _ = x.shape
        ws, heads, hd = self.window_size, self.h_heads, self.head_dims
        hg, wg = Hp // ws, Wp // ws
        # Project first, then partition: moves 3*h_dim instead of C channels.
        qkv = self.h_qkv(x).view(B, hg, ws, wg, ws, 3, heads, hd)
        q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(
            3, B * hg * wg, heads, ws * ws, hd)
        # ws * ws (4) keys per window: the explicit softmax (2-3x faster on
        # CPU than SDPA's fused kernel, docs/benchmarks.md)
        out = _softmax_attention(q, k, v, self.scale)
        out = out.view(B, hg, wg, heads, ws, ws, hd)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, self.h_dim)
        return self.h_proj(out)

    def _lofi(self, x: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        """Global attention of every unpadded query to the pooled map.

        Queries at padded positions would be discarded, so only the ``H*W``
        real ones are computed; keys/values come from the padded map.
        """
        B, H, W, C = x.shape
        Hp, Wp = padded.shape[1:3]
        ws, heads, hd = self.window_size, self.l_heads, self.head_dims
        q = self.l_q(x).view(B, H * W, heads, hd).transpose(1, 2)
        pooled = padded.reshape(B, Hp * Wp, C)
        if ws > 1:  # the official AvgPool2d(ws, ws), on the channels-last view
            pooled = nchw_as_tokens(
                F.avg_pool2d(tokens_as_nchw(pooled, (Hp, Wp)), ws))
        kv = self.l_kv(pooled).view(B, -1, 2, heads, hd)
        kv = kv.permute(2, 0, 3, 1, 4)
        if x.device.type == 'cpu' and kv.shape[-2] <= _FEW_KEYS:
            out = _softmax_attention(q, kv[0], kv[1], self.scale)
        else:
            out = F.scaled_dot_product_attention(
                q, kv[0], kv[1], scale=self.scale)
        return self.l_proj(out.transpose(1, 2).reshape(B, H * W, self.l_dim))

    def flops(self, H: int, W: int) -> int:
        """Multiply-accumulates of one image at an ``H x W`` map, by the
        official formula (``hilo.py``): projections and the two attention
        matmuls on the padded map; softmax, pooling and biases excluded.

        ``HiLoAttention(384, 12, window_size=2, alpha=0.5).flops(14, 14) ==
        83_467_776``.
        """
        ws = self.window_size
        Hp, Wp = ws * math.ceil(H / ws), ws * math.ceil(W / ws)
        Np = Hp * Wp
        num_windows = kv_len = (Hp // ws) * (Wp // ws)
        C, h_dim, l_dim = self.embed_dims, self.h_dim, self.l_dim
        hifi = (Np * C * 3 * h_dim + num_windows * (ws * ws)**2 * h_dim * 2 +
                Np * h_dim * h_dim)
        lofi = (Np * C * l_dim + kv_len * C * 2 * l_dim +
                Np * l_dim * kv_len * 2 + Np * l_dim * l_dim)
        return hifi + lofi
