# Copyright (c) mmlinattn contributors. All rights reserved.
"""Token <-> feature-map layouts.

Tokens (B, H*W, C) are channels-last memory, so a (B, C, H, W) *view* of
them in ``torch.channels_last`` costs nothing, and oneDNN's convolutions on
CPU (depthwise ones in particular) run on it directly and return
channels-last maps, whose token view is free again. Going through a
contiguous NCHW map instead costs a transpose copy before and after every
convolution. Measured per call site in docs/benchmarks.md.
"""
from typing import Tuple

import torch

Grid = Tuple[int, int]


def _check(x: torch.Tensor, hw: Grid) -> Tuple[int, int, int, int]:
    B, N, C = x.shape
    H, W = hw
    if N != H * W:
        raise ValueError(f'{N} tokens do not form a {H}x{W} grid')
    return B, C, H, W


def tokens_as_nchw(x: torch.Tensor, hw: Grid) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) channels-last view (no copy for
    contiguous tokens); the input of convolutions on a token grid."""
    B, C, H, W = _check(x, hw)
    return x.reshape(B, H, W, C).permute(0, 3, 1, 2)


def nchw_as_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) tokens; free for channels-last maps (the
    output of a convolution on :func:`tokens_as_nchw`)."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, C)


def tokens_to_nchw(x: torch.Tensor, hw: Grid) -> torch.Tensor:
    """(B, H*W, C) tokens -> contiguous (B, C, H, W) map (backbone outputs
    and ops without a channels-last kernel)."""
    B, C, H, W = _check(x, hw)
    return x.transpose(1, 2).reshape(B, C, H, W).contiguous()
