# Copyright (c) mmlinattn contributors. All rights reserved.
"""Swin's (shifted) window softmax attention.

Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo: "Swin Transformer: Hierarchical
Vision Transformer using Shifted Windows", ICCV 2021.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import (Linear, head_dims, pad_to_multiple, region_mask,
                     window_partition, window_reverse)
from ..utils.window import roll_2d, shift_if_larger

Grid = Tuple[int, int]


def resize_relative_position_bias_table(table: torch.Tensor,
                                        window_size: int) -> torch.Tensor:
    """((2w'-1)^2, h) table -> ((2w-1)^2, h), bicubic as the official
    224 -> 384 fine-tune."""
    src = int(round(table.shape[0]**0.5))
    dst = 2 * window_size - 1
    if src == dst:
        return table
    grid = table.T.reshape(1, -1, src, src).float()
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic')
    return grid.reshape(-1, dst * dst).T.to(table.dtype)


@register_model()
class WindowAttention(nn.Module):
    """Window multi-head softmax attention with a learnt relative position
    bias (``relative_position_bias_table``, official name) on
    ``F.scaled_dot_product_attention``.

    On a token grid the map is zero-padded right / bottom to whole windows,
    cyclically shifted by ``window_size // 2`` when ``shift`` (skipped when
    the map is not larger than a window, as in the official model),
    partitioned, attended per window with Swin's -100 region mask (padded
    keys form a region of their own, so real tokens never see them), then
    reversed and cropped.

    While exporting to ONNX (``torch.onnx.is_in_onnx_export()``) the
    forward is shape-generic: it always pads and masks, takes the shift
    decision in the graph (a 0-dim tensor that is ``window_size // 2`` or 0)
    and rolls with ``Gather`` on run-time indices, so the graph gives the
    eager result at sizes on both sides of the skip threshold.

    Args:
        embed_dims, num_heads: width and heads.
        window_size: window side (a host fact in Swin).
        shift: shifted windows (every second Swin block; a host fact).
        qkv_bias: bias of ``qkv``.
        attn_drop: softmax dropout.
        proj_drop: dropout after ``proj``.
    """
    host_needs = ('window_size', )

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int,
                 shift: bool = False,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        head_dims(embed_dims, num_heads)
        if int(window_size) != window_size or window_size < 1:
            raise ValueError(f'window_size must be an int >= 1, got '
                             f'{window_size!r}')
        self.num_heads = num_heads
        self.window_size = int(window_size)
        self.shift = shift
        self.attn_drop = attn_drop
        self.qkv = Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        ws = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * ws - 1)**2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(ws), torch.arange(ws),
                           indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]) + ws - 1
        self.register_buffer(
            'relative_position_index',
            rel[0] * (2 * ws - 1) + rel[1],
            persistent=False)

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, window_size='
                f'{self.window_size}, shift={self.shift}')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Adapt a table learnt for another window size (bicubic)."""
        key = prefix + 'relative_position_bias_table'
        value = state_dict.get(key)
        if (value is not None
                and value.shape != self.relative_position_bias_table.shape):
            state_dict[key] = resize_relative_position_bias_table(
                value, self.window_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def relative_position_bias(self) -> torch.Tensor:
        """(h, N, N) bias for one window."""
        N = self.window_size**2
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)]
        return bias.view(N, N, -1).permute(2, 0, 1)

    def attend_windows(self,
                       x: torch.Tensor,
                       mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B * nW, N, C) windows, optional additive (nW, N, N) mask."""
        B_, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias()
        # 4-D inputs and a 4-D mask (windows x heads on one axis): CPU's
        # fused SDPA kernel (and the torch.export exporter) take only those;
        # 5-D inputs or a 3-D mask fall back to the unfused math path
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).flatten(0, 1)
            q, k, v = (
                t.reshape(B_ // nW, nW * h, N, C // h) for t in (q, k, v))
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.unsqueeze(0).to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.)
        x = x.reshape(B_, h, N, C // h).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, H*W, C) tokens on grid ``hw`` -> (B, H*W, C)."""
        if torch.onnx.is_in_onnx_export():
            return self._traceable_forward(x, hw)
        B, N, C = x.shape
        H, W = hw
        w = self.window_size
        shift = w // 2 if self.shift and min(H, W) > w else 0
        x = pad_to_multiple(x.view(B, H, W, C), (w, w))
        padded_hw = (x.shape[1], x.shape[2])
        if shift:
            x = torch.roll(x, (-shift, -shift), (1, 2))
        mask = region_mask(hw, padded_hw, (w, w), shift, x.device)
        x = self.attend_windows(window_partition(x, (w, w)), mask)
        x = window_reverse(x, (w, w), padded_hw)
        if shift:
            x = torch.roll(x, (shift, shift), (1, 2))
        return x[:, :H, :W].reshape(B, N, C)

    def _traceable_forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """:meth:`forward` without Python decisions on sizes (export)."""
        B, N, C = x.shape
        H, W = hw
        w = self.window_size
        x = pad_to_multiple(x.view(B, H, W, C), (w, w))  # always pads
        padded_hw = (x.shape[1], x.shape[2])
        shift = 0
        if self.shift and w // 2:  # construction facts, not sizes
            shift = shift_if_larger(hw, w, w // 2, x.device)
            x = roll_2d(x, shift)
        mask = region_mask(hw, padded_hw, (w, w), shift, x.device)
        x = self.attend_windows(window_partition(x, (w, w)), mask)
        x = window_reverse(x, (w, w), padded_hw)
        if self.shift and w // 2:
            x = roll_2d(x, -shift)
        return x[:, :H, :W].reshape(B, N, C)
