# Copyright (c) mmlinattn contributors. All rights reserved.
"""Window partitioning, padding and region masks of windowed / striped
attention (Swin, CSWin, HiLo)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .layout import nchw_as_tokens, tokens_as_nchw

Grid = Tuple[int, int]

# Logit offset of Swin's shift mask (kept for parity with the checkpoints).
MASK_VALUE = -100.


def pad_to_multiple(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map right / bottom to multiples of
    ``window``. While exporting it always pads (a no-op when the sides
    divide) so that the traced graph holds for every size."""
    H, W = x.shape[1:3]
    pad_b, pad_r = (-H) % window[0], (-W) % window[1]
    # the export check first: no Python branch on (symbolic) sizes
    if torch.onnx.is_in_onnx_export() or pad_b or pad_r:
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return x


def window_partition(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, wh * ww, C), windows in row-major order."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows: torch.Tensor, window: Grid,
                   hw: Grid) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    (wh, ww), (H, W) = window, hw
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def region_mask(hw: Grid, padded_hw: Grid, window: Grid, shift: int,
                device: torch.device) -> Optional[torch.Tensor]:
    """Additive (nW, N, N) attention mask for windows of a padded, cyclically
    shifted map, or ``None`` when no token must be hidden.

    Tokens attend only to tokens of their own region: Swin's shift regions
    (the wrapped-around border strips) and, as an extra region, the padding,
    so real queries never see padded keys.

    While exporting to ONNX it always returns a mask (all zeros where eager
    mode returns ``None``), built by comparisons on ``torch.arange`` of the
    (symbolic) sizes, and ``shift`` may be a 0-dim tensor (see
    :func:`shift_if_larger`), so the graph holds for every size.
    """
    if torch.onnx.is_in_onnx_export():
        return _traceable_region_mask(hw, padded_hw, window, shift, device)
    (H, W), (Hp, Wp) = hw, padded_hw
    if shift == 0 and (H, W) == (Hp, Wp):
        return None
    labels = torch.zeros(Hp, Wp, device=device)
    if shift > 0:
        bounds = [(0, -window[0]), (-window[0], -shift), (-shift, None)]
        cols = [(0, -window[1]), (-window[1], -shift), (-shift, None)]
        for i, (h0, h1) in enumerate(bounds):
            for j, (w0, w1) in enumerate(cols):
                labels[h0:h1, w0:w1] = 3 * i + j
    padding = torch.ones(Hp, Wp, dtype=torch.bool, device=device)
    padding[:H, :W] = False
    padding = torch.roll(padding, (-shift, -shift), (0, 1))
    labels[padding] = -1
    labels = window_partition(labels.view(1, Hp, Wp, 1), window).squeeze(-1)
    mask = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(
        mask.shape, device=device).masked_fill_(mask, MASK_VALUE)


def padding_key_mask(hw: Grid, padded_hw: Grid, window: Grid,
                     device: torch.device) -> torch.Tensor:
    """Boolean (nW, 1, 1, N) mask, True for the real (unpadded) keys of each
    window of a map padded from ``hw`` to ``padded_hw``."""
    if torch.onnx.is_in_onnx_export():  # no slicing by (symbolic) sizes
        rows = torch.arange(padded_hw[0], device=device) < hw[0]
        cols = torch.arange(padded_hw[1], device=device) < hw[1]
        valid = (rows[:, None] & cols[None, :]).float()
        valid = valid.view(1, padded_hw[0], padded_hw[1], 1)
    else:
        valid = torch.zeros(1, *padded_hw, 1, device=device)
        valid[:, :hw[0], :hw[1]] = 1
    n = window[0] * window[1]
    return window_partition(valid, window).view(-1, 1, 1, n) > 0


# ---------------------------------------------- shape-generic (ONNX export)
# Eager mode builds masks with Python slicing and skips work by comparing
# sizes; an exported graph must not bake the traced sizes in, so while
# exporting the helpers below build the same values from tensor arithmetic
# on ``torch.arange`` of the (symbolic) sizes and take size-dependent
# decisions inside the graph.


def _arange_and_size(n, device: torch.device):
    """``arange(n)`` and ``n`` as a 0-dim tensor taken from it: the
    ``torch.export`` ONNX exporter cannot take the remainder of a tensor by
    a symbolic int, so sizes enter modular arithmetic as tensors."""
    pos = torch.arange(n, device=device)
    return pos, pos[-1] + 1


def shift_if_larger(hw: Grid, window: int, shift: int,
                    device: torch.device) -> torch.Tensor:
    """0-dim int64 tensor: ``shift`` when ``min(H, W) > window``, else 0
    (Swin skips the shift on maps not larger than a window), decided by
    tensor ops on ``arange(H)`` / ``arange(W)`` so that an exported graph
    takes the decision at run time instead of at the traced size."""
    larger = ((torch.arange(hw[0], device=device) >= window).any()
              & (torch.arange(hw[1], device=device) >= window).any())
    return larger.long() * shift


def roll_2d(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``torch.roll(x, (-shift, -shift), (1, 2))`` of a (B, H, W, C) map for
    a ``shift`` that is a 0-dim tensor (``Gather`` with run-time indices;
    a negative ``shift`` rolls the other way, ``|shift| < H, W``)."""
    for dim in (1, 2):
        pos, n = _arange_and_size(x.shape[dim], x.device)
        x = x.index_select(dim, (pos + shift + n) % n)
    return x


def _traceable_region_mask(hw: Grid, padded_hw: Grid, window: Grid, shift,
                           device: torch.device) -> torch.Tensor:
    """:func:`region_mask` from comparisons on ``torch.arange`` (equal
    values; a zero mask instead of ``None``). Region boundaries of the
    shifted map: rows ``[0, Hp - w)``, ``[Hp - w, Hp - shift)``,
    ``[Hp - shift, Hp)`` (the middle one reaches ``Hp`` when ``shift`` is
    0; a window boundary, so no window sees two regions then); a token is
    padding when its unshifted row ``(r + shift) % Hp >= H`` (or column)."""
    (H, W), (Hp, Wp) = hw, padded_hw
    labels, padding = [], []
    for n, size, w in ((Hp, H, window[0]), (Wp, W, window[1])):
        pos, n = _arange_and_size(n, device)
        labels.append((pos >= n - w).long() + (pos >= n - shift).long())
        padding.append((pos + shift) % n >= size)
    labels = (3 * labels[0][:, None] + labels[1][None, :]).float()
    labels = labels.masked_fill(padding[0][:, None] | padding[1][None, :], -1)
    labels = window_partition(labels.view(1, Hp, Wp, 1), window).squeeze(-1)
    mask = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(
        mask.shape, device=device).masked_fill_(mask, MASK_VALUE)


def spatial_reduction(x: torch.Tensor, hw: Grid, sr: torch.nn.Module,
                      norm: torch.nn.Module,
                      ratio: int) -> Tuple[torch.Tensor, Grid]:
    """PVT's key/value reduction: (B, H*W, C) tokens -> the ``sr`` strided
    conv (kernel = stride = ``ratio``) -> ``norm``; returns the reduced
    tokens and their grid. The error names the fix for too small a grid."""
    B, N, C = x.shape
    H, W = hw
    if N != H * W:
        raise ValueError(f'{N} tokens do not form the {H}x{W} grid that the '
                         'spatial reduction needs')
    if min(H, W) < ratio:
        raise ValueError(f'a {H}x{W} token grid is smaller than sr_ratio='
                         f'{ratio}; use a larger input')
    x = sr(tokens_as_nchw(x, hw))
    return norm(nchw_as_tokens(x)), (x.shape[2], x.shape[3])
