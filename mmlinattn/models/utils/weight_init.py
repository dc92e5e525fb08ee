# Copyright (c) mmlinattn contributors. All rights reserved.
"""Initialisation and stochastic-depth schedules shared by every family."""
from typing import List, Sequence

import torch
import torch.nn as nn


def init_linear_and_norm(module: nn.Module) -> None:
    """ViT / DeiT / PVT / Swin initialisation of one module: Linear weights
    trunc_normal(std=0.02) with zero bias, LayerNorm weight 1 and bias 0;
    anything else keeps its own init. Use as ``model.apply(...)``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_conv_fan_out(conv: nn.Conv2d) -> None:
    """normal(0, sqrt(2 / fan_out)) weight and zero bias (PVTv2 / LITv2)."""
    fan_out = (
        conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels //
        conv.groups)
    nn.init.normal_(conv.weight, 0, (2.0 / fan_out)**0.5)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def drop_path_schedule(drop_path_rate: float,
                       depths: Sequence[int]) -> List[List[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate``
    over all blocks, split per stage (``depths`` blocks each)."""
    rates = torch.linspace(
        0, drop_path_rate, sum(depths), device='cpu').tolist()
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [rates[s:s + d] for s, d in zip(starts, depths)]
