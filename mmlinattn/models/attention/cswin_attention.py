# Copyright (c) mmlinattn contributors. All rights reserved.
"""CSWin's cross-shaped window (stripe) softmax attention with LePE.

Dong, Bao, Chen, Zhang, Yu, Yuan, Chen, Guo: "CSWin Transformer: A
General Vision Transformer Backbone with Cross-Shaped Windows", CVPR 2022.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import (Linear, head_dims, nchw_as_tokens, pad_to_multiple,
                     padding_key_mask, tokens_as_nchw,
                     window_partition, window_reverse)

Grid = Tuple[int, int]


@register_model()
class CSWinAttention(nn.Module):
    """Stripe softmax attention: two branches of ``C / 2`` channels and
    ``h / 2`` heads attend within vertical (full height x ``split_size``)
    and horizontal (``split_size`` x full width) stripes, or, with
    ``global_window``, one branch of all channels and heads attends over
    the whole map (CSWin's last stage). LePE (``lepe.{branch}``, 3 x 3
    depthwise) is applied to V inside each stripe, as upstream; the scale
    is ``head_dim ** -0.5``. Stripes are zero-padded bottom / right and
    padded keys are masked, so any H x W works.

    Args:
        embed_dims, num_heads: width and heads.
        split_size: stripe width (a host fact in CSWin).
        global_window: one global branch (a host fact: the last stage, or
            a stripe covering the whole pretraining map).
        qkv_bias: bias of ``qkv``.
        attn_drop: softmax dropout.
        proj_drop: dropout after ``proj``.
    """
    host_needs = ('split_size', )

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 split_size: int,
                 global_window: bool = False,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        head_dims(embed_dims, num_heads)
        branches = 1 if global_window else 2
        if not global_window and num_heads % 2:
            raise ValueError('stripe attention splits the heads in two '
                             f'branches; num_heads={num_heads} is odd')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.split_size = split_size
        self.global_window = global_window
        self.attn_drop = attn_drop
        self.qkv = Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        dims = embed_dims // branches
        self.lepe = nn.ModuleList([
            nn.Conv2d(dims, dims, 3, padding=1, groups=dims)
            for _ in range(branches)
        ])
        self.proj = Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, split_size={self.split_size}, '
                f'global_window={self.global_window}')

    def _stripes(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 hw: Grid, window: Grid, lepe: nn.Module,
                 num_heads: int) -> torch.Tensor:
        """Attention of one branch inside ``window``-shaped stripes."""
        B, N, C = q.shape
        H, W = hw
        wh, ww = window
        q, k, v = (
            pad_to_multiple(t.view(B, H, W, C), window) for t in (q, k, v))
        padded_hw = (q.shape[1], q.shape[2])
        q, k, v = (window_partition(t, window) for t in (q, k, v))
        B_, n, _ = q.shape
        positional = nchw_as_tokens(lepe(tokens_as_nchw(v, window)))
        d = C // num_heads
        q, k, v = (
            t.view(B_, n, num_heads, d).transpose(1, 2) for t in (q, k, v))
        mask = None
        # hide padded keys from real queries; always while exporting (an
        # all-True mask where nothing is padded) so the graph holds for
        # every size
        if torch.onnx.is_in_onnx_export() or padded_hw != (H, W):
            # 4-D inputs and mask, stripes x heads on one axis: CPU's fused
            # SDPA kernel (and the torch.export exporter) take only those
            mask = padding_key_mask(hw, padded_hw, window, q.device)
            mask = mask.expand(-1, num_heads, -1, -1).reshape(1, -1, 1, n)
            q, k, v = (t.reshape(B, -1, n, d) for t in (q, k, v))
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.)
        x = x.reshape(B_, num_heads, n, d).transpose(1, 2).reshape(B_, n, C)
        x = window_reverse(x + positional, window, padded_hw)
        return x[:, :H, :W].reshape(B, N, C)

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, H*W, C) tokens on grid ``hw`` -> (B, H*W, C)."""
        H, W = hw
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.global_window:
            x = self._stripes(q, k, v, hw, (H, W), self.lepe[0],
                              self.num_heads)
        else:
            C, s = self.embed_dims // 2, self.split_size
            h = self.num_heads // 2
            x = torch.cat([
                self._stripes(q[..., :C], k[..., :C], v[..., :C], hw,
                              (H, s), self.lepe[0], h),
                self._stripes(q[..., C:], k[..., C:], v[..., C:], hw,
                              (s, W), self.lepe[1], h)
            ],
                          dim=-1)
        return self.proj_drop(self.proj(x))
