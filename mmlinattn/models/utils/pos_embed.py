# Copyright (c) mmlinattn contributors. All rights reserved.
"""Absolute position-embedding resizing."""
import warnings
from typing import Tuple

import torch
import torch.nn.functional as F


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_hw: Tuple[int, int],
                     dst_hw: Tuple[int, int],
                     num_extra_tokens: int = 0,
                     mode: str = 'bilinear',
                     align_corners: bool = False) -> torch.Tensor:
    """Resize (1, extra + h*w, C) position embeddings to another grid.

    Extra (e.g. cls) tokens are kept in front and untouched. Returns the
    input itself when the grids are equal, so it is an exact identity at the
    training resolution. While exporting to ONNX it always interpolates (an
    exact identity for equal grids too), so the graph follows the input
    size instead of baking in the traced one.
    """
    if tuple(src_hw) == tuple(dst_hw) and not torch.onnx.is_in_onnx_export():
        return pos_embed
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:]
    if grid.shape[1] != src_hw[0] * src_hw[1]:
        raise ValueError(f'position embedding has {grid.shape[1]} grid '
                         f'tokens, not {src_hw[0]}x{src_hw[1]}')
    C = grid.shape[-1]
    grid = grid.reshape(1, src_hw[0], src_hw[1], C).permute(0, 3, 1, 2)
    # interpolate in at least float32 (float64 stays float64)
    compute_dtype = torch.promote_types(grid.dtype, torch.float32)
    grid = F.interpolate(
        grid.to(compute_dtype),
        size=tuple(dst_hw),
        mode=mode,
        align_corners=align_corners).to(pos_embed.dtype)
    grid = grid.flatten(2).transpose(1, 2)
    return torch.cat([extra, grid], dim=1)


def resize_grid_table_on_load(state_dict: dict,
                              key: str,
                              param: torch.Tensor,
                              grid: Tuple[int, int],
                              mode: str = 'bicubic',
                              num_extra_tokens: int = 0) -> None:
    """For ``load_state_dict`` pre-hooks: replace a (1, extra + s*s, C)
    checkpoint table ``state_dict[key]`` learnt on another square grid
    (e.g. a 384 fine-tune) by its resize to ``grid``, with a warning.

    Tables whose shape already matches ``param``, or that are not square,
    are left for ``load_state_dict`` to accept or report.
    """
    value = state_dict.get(key)
    if value is None or value.shape == param.shape or value.dim() != 3:
        return
    side = int(round((value.shape[1] - num_extra_tokens)**0.5))
    if side * side != value.shape[1] - num_extra_tokens:
        return
    state_dict[key] = resize_pos_embed(
        value, (side, side), grid, num_extra_tokens, mode=mode)
    warnings.warn(f'{key}: resized {side}x{side} -> {grid[0]}x{grid[1]} '
                  f'({mode})')
