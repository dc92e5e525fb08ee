# Copyright (c) mmlinattn contributors. All rights reserved.
"""The pre-norm transformer block shared by PVT, PVTv2, Swin, CSWin, LITv2,
SOFT's last stage and the isotropic ViT host."""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .attention_builder import build_attention
from .ffn import Mlp
from .misc import (branch_of_recomputed_norm, build_drop_path,
                   checkpoint_call)

Grid = Tuple[int, int]


class TransformerBlock(nn.Module):
    """``x + DropPath(attn(norm1(x), hw))`` then
    ``x + DropPath(mlp(norm2(x), hw))``.

    Args:
        embed_dims: channels C.
        num_heads: heads of the attention.
        attn_cfg: the attention as a config (see
            :func:`~mmlinattn.models.utils.build_attention`); ``None``: no
            attention branch (LITv2's ConvFFN-only blocks; ``norm1`` and
            ``attn`` then do not exist).
        host: the host's name, for construction errors.
        host_facts: what the host tells the attention (``grid``,
            ``window_size``, ``shift``, ...).
        mlp_ratio: hidden width of the MLP / C.
        conv_ffn: the MLP is a ConvFFN (3x3 depthwise conv after ``fc1``,
            PVTv2 / LITv2).
        drop_rate: dropout inside the MLP (the attention gets it as
            ``proj_drop`` when it accepts one).
        drop_path_rate: stochastic depth of both branches.
        norm_eps: LayerNorm epsilon.
        with_cp: activation checkpointing of the whole block.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_cfg: Optional[dict],
                 host: str = 'TransformerBlock',
                 host_facts: Optional[dict] = None,
                 mlp_ratio: float = 4.,
                 conv_ffn: bool = False,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-5,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        if attn_cfg is not None:
            self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
            self.attn = build_attention(
                attn_cfg, embed_dims, num_heads, host,
                **dict(host_facts or {}, proj_drop=drop_rate))
        else:
            self.attn = None
        self.drop_path = build_drop_path(drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(
            embed_dims,
            int(embed_dims * mlp_ratio),
            drop=drop_rate,
            use_dwconv=conv_ffn)

    def _forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        # the branches do not keep the LayerNorm outputs for backward
        if self.attn is not None:
            x = x + self.drop_path(
                branch_of_recomputed_norm(self.attn, self.norm1, x, hw))
        return x + self.drop_path(
            branch_of_recomputed_norm(self.mlp, self.norm2, x, hw))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, H*W, C) tokens on grid ``hw`` -> (B, H*W, C)."""
        return checkpoint_call(self._forward, x, hw, enabled=self.with_cp)
