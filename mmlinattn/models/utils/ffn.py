# Copyright (c) mmlinattn contributors. All rights reserved.
"""Feed-forward blocks shared by the families (plain MLP and ConvFFN)."""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from .layout import nchw_as_tokens, tokens_as_nchw


class DWConv(nn.Module):
    """Depthwise k x k conv applied to a (B, N, C) token grid.

    Attribute name ``dwconv`` matches the PVTv2 / LITv2 checkpoints
    (``mlp.dwconv.dwconv.weight``).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2,
                                groups=dim, bias=True)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        return nchw_as_tokens(self.dwconv(tokens_as_nchw(x, hw)))


class Mlp(nn.Module):
    """``fc1 -> [DWConv] -> act -> drop -> fc2 -> drop``.

    With ``use_dwconv=True`` this is the ConvFFN of PVTv2 (Wang et al., 2022)
    and LITv2 (Pan et al., NeurIPS 2022); it then needs the token grid
    ``hw`` in :meth:`forward`.
    """

    def __init__(self,
                 in_features: int,
                 hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None,
                 act_layer: Callable[[], nn.Module] = nn.GELU,
                 drop: float = 0.,
                 use_dwconv: bool = False):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features) if use_dwconv else None
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self,
                x: torch.Tensor,
                hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            if hw is None:
                raise ValueError('Mlp(use_dwconv=True) needs the token grid '
                                 'hw=(H, W)')
            x = self.dwconv(x, hw)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))
