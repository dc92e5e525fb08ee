# Copyright (c) mmlinattn contributors. All rights reserved.
"""Helpers for mmlinattn's tests and for users testing their own configs.

Lives in the package (like ``mmdet.testing``) because the mmsegmentation
wheel installs a top-level ``tests`` package that would shadow ours.
"""
from typing import Dict, Iterable, Tuple

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm


def is_norm(module: nn.Module) -> bool:
    return isinstance(module,
                      (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm))


def check_norm_state(modules: Iterable[nn.Module], train_state: bool) -> bool:
    """True if every BatchNorm among ``modules`` has ``training ==
    train_state``."""
    return all(m.training == train_state for m in modules
               if isinstance(m, _BatchNorm))


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters()
               if p.requires_grad or not trainable_only)


#: tiny variants of every backbone: name -> (kwargs, output strides)
TINY_BACKBONES: Dict[str, Tuple[dict, Tuple[int, ...]]] = {
    'SOFT': (dict(
        arch=dict(
            embed_dims=[16, 32, 64, 64],
            num_heads=[1, 1, 2, 2],
            depths=[1, 1, 1, 1]),
        pretrain_img_size=64), (4, 8, 16, 32)),
    'FLattenPVT': (dict(
        arch=dict(
            embed_dims=[16, 16, 32, 32],
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2]),
        pretrain_img_size=64), (4, 8, 16, 32)),
    'FLattenSwin': (dict(
        arch=dict(embed_dims=16, depths=[1, 1, 2, 2], num_heads=[1, 2, 2, 4]),
        pretrain_img_size=64,
        window_size=3), (4, 8, 16, 32)),
    'FLattenCSWin': (dict(
        arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4]),
        pretrain_img_size=64,
        split_size=[1, 2, 2, 2]), (4, 8, 16, 32)),
    'LITv2': (dict(
        arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
        with_stage0_norm=True), (4, 8, 16, 32)),
    'UFOViT': (dict(
        arch=dict(embed_dims=32, depth=4, num_heads=2),
        img_size=64,
        patch_size=8,
        out_type='featmap'), (4, 8, 16, 32)),
    'PlainViT': (dict(
        arch=dict(embed_dims=32, depth=4, num_heads=2),
        img_size=64,
        patch_size=8), (8, 8, 8, 8)),
}
# PVTv2 differs from PVT in layout only, not in its arch settings
TINY_BACKBONES['FLattenPVTv2'] = TINY_BACKBONES['FLattenPVT']
