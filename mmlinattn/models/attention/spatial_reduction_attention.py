# Copyright (c) mmlinattn contributors. All rights reserved.
"""PVT's spatial-reduction softmax attention.

Wang, Xie, Li, Fan, Song, Liang, Lu, Luo, Shao: "Pyramid Vision
Transformer: A Versatile Backbone for Dense Prediction without
Convolutions", ICCV 2021. With ``sr_ratio=1`` this is global multi-head
softmax attention (the last stage of PVT and of SOFT).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import Linear, head_dims, spatial_reduction

Grid = Tuple[int, int]


@register_model()
class SpatialReductionAttention(nn.Module):
    """Softmax attention over keys / values from the map reduced by a
    ``sr_ratio`` x ``sr_ratio`` strided conv ``sr`` and LayerNorm ``norm``
    (official names ``q``, ``kv``, ``sr``, ``norm``, ``proj``), on
    ``F.scaled_dot_product_attention``.

    Extra tokens in front of the grid (a cls token) are allowed when
    ``sr_ratio == 1``: every token attends to every token.

    Args:
        embed_dims, num_heads: width and heads.
        sr_ratio: spatial reduction of keys and values (a host fact in PVT).
        qkv_bias: bias of ``q`` and ``kv``.
        attn_drop: softmax dropout.
        proj_drop: dropout after ``proj``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        head_dims(embed_dims, num_heads)
        if int(sr_ratio) != sr_ratio or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be an int >= 1, got {sr_ratio!r}')
        self.num_heads = num_heads
        self.sr_ratio = int(sr_ratio)
        self.attn_drop = attn_drop
        self.q = Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims)
        self.proj = Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, sr_ratio={self.sr_ratio}'

    def project(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, ...]:
        """-> per-head q (B, h, N, d), k and v (B, h, n, d), key grid."""
        B, N, C = x.shape
        H, W = hw
        h = self.num_heads
        q = self.q(x).view(B, N, h, C // h).transpose(1, 2)
        kv_hw = (H, W)
        if self.sr_ratio > 1:
            x, kv_hw = spatial_reduction(x, hw, self.sr, self.norm,
                                         self.sr_ratio)
        k, v = self.kv(x).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        return q, k, v, kv_hw

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, N, C) tokens on grid ``hw`` -> (B, N, C)."""
        B, N, C = x.shape
        q, k, v, _ = self.project(x, hw)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))
