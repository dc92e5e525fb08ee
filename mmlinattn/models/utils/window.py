# Copyright (c) mmlinattn contributors. All rights reserved.
"""Window partitioning, padding and region masks of windowed / striped
attention (Swin, CSWin, HiLo)."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Grid = Tuple[int, int]

# Logit offset of Swin's shift mask (kept for parity with the checkpoints).
MASK_VALUE = -100.


def pad_to_multiple(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """Zero-pad a (B, H, W, C) map right / bottom to multiples of
    ``window``. While exporting it always pads (a no-op when the sides
    divide) so that the traced graph holds for every size."""
    H, W = x.shape[1:3]
    pad_b, pad_r = (-H) % window[0], (-W) % window[1]
    if pad_b or pad_r or torch.onnx.is_in_onnx_export():
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
    """
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
    valid = torch.zeros(1, *padded_hw, 1, device=device)
    valid[:, :hw[0], :hw[1]] = 1
    n = window[0] * window[1]
    return window_partition(valid, window).view(-1, 1, 1, n) > 0
