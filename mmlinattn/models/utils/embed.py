# Copyright (c) mmlinattn contributors. All rights reserved.
"""Patch embeddings shared by the families."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layout import nchw_as_tokens, tokens_as_nchw


class ConvPatchEmbed(nn.Module):
    """Conv projection of an image / feature map to tokens.

    ``proj`` (Conv2d) then an optional LayerNorm ``norm`` over channels, the
    layout of PVT, PVTv2, Swin, CSwin and LITv2 patch embeddings.

    Args:
        in_channels: input channels.
        embed_dims: output channels.
        kernel_size, stride, padding: of the projection conv.
        norm: add ``nn.LayerNorm(embed_dims, eps=norm_eps)``.
        pad_to_stride: zero-pad right/bottom so that H and W are multiples
            of ``stride`` (Swin-style, keeps every pixel for arbitrary sizes).
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 kernel_size: int,
                 stride: int,
                 padding: int = 0,
                 norm: bool = True,
                 norm_eps: float = 1e-5,
                 pad_to_stride: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size, stride,
                              padding)
        self.norm: Optional[nn.LayerNorm] = nn.LayerNorm(
            embed_dims, eps=norm_eps) if norm else None
        self.stride = stride
        self.pad_to_stride = pad_to_stride

    def forward(
        self,
        x: torch.Tensor,
        hw: Optional[Tuple[int, int]] = None
    ) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, C, H, W) images, or (B, H*W, C) tokens on the grid ``hw``
        (as a stage's downsampling) -> tokens (B, H'*W', D) and (H', W')."""
        # channels-last in, so the map out is already in token order
        x = (tokens_as_nchw(x, hw) if hw is not None else
             x.contiguous(memory_format=torch.channels_last))
        if self.pad_to_stride:
            H, W = x.shape[-2:]
            pad_h, pad_w = (-H) % self.stride, (-W) % self.stride
            # Exporters trace one branch: always pad there (a no-op for
            # multiples of the stride) so the graph holds for every size.
            if torch.onnx.is_in_onnx_export() or pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        x = nchw_as_tokens(x)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw
