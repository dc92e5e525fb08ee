# Copyright (c) mmlinattn contributors. All rights reserved.
"""Linear attention with the elu + 1 feature map.

Katharopoulos, Vyas, Pappas, Fleuret: "Transformers are RNNs: Fast
Autoregressive Transformers with Linear Attention", ICML 2020
(arXiv:2006.16236) -- the baseline the linear vision transformers compare
against.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import Linear, head_dims, run_in_float32


def elu_linear_attention(q: torch.Tensor,
                         k: torch.Tensor,
                         v: torch.Tensor,
                         eps: float = 1e-6) -> torch.Tensor:
    """``phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j))``
    with ``phi = elu + 1``, per head: q, k (B, h, N, d), v (B, h, N, e)."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    kv = k.transpose(-2, -1) @ v  # (B, h, d, e)
    normaliser = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)
    return (q @ kv) / (normaliser + eps)


@register_model()
class LinearAttention(nn.Module):
    """Multi-head linear attention (elu + 1 feature map) with ``qkv`` and
    ``proj`` projections; O(N d^2), softmax-free, global. The feature map
    and the two products run in at least float32.

    Args:
        embed_dims, num_heads: width and heads.
        qkv_bias: bias of ``qkv``.
        proj_drop: dropout after ``proj``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 proj_drop: float = 0.):
        super().__init__()
        head_dims(embed_dims, num_heads)
        self.num_heads = num_heads
        self.qkv = Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """(B, N, C) tokens (``hw`` is not needed: the layer is global and
        permutation-equivariant) -> (B, N, C)."""
        B, N, C = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        x = run_in_float32(elu_linear_attention, q, k, v)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))
