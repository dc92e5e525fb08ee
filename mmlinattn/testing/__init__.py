# Copyright (c) mmlinattn contributors. All rights reserved.
"""Helpers for mmlinattn's tests and for users testing their own configs.

Lives in the package (like ``mmdet.testing``) because the mmsegmentation
wheel installs a top-level ``tests`` package that would shadow ours.
"""
from typing import Iterable

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
