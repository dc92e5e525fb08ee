# Copyright (c) mmlinattn contributors. All rights reserved.
"""Small helpers shared by the families: stochastic depth, activation
checkpointing and when hand-written backward passes apply."""
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torchvision.ops import StochasticDepth


def build_drop_path(drop_prob: float) -> nn.Module:
    """DropPath (stochastic depth per sample), ``Identity`` when 0."""
    if drop_prob > 0:
        return StochasticDepth(drop_prob, 'row')
    return nn.Identity()


def checkpoint_call(fn: Callable, *args: Any, enabled: bool) -> Any:
    """``fn(*args)``, with non-reentrant activation checkpointing when
    ``enabled`` and any tensor argument requires grad (``with_cp``)."""
    if enabled and any(
            isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return cp.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def hand_written_backward_applies() -> bool:
    """Whether a layer may run an autograd Function with a hand-written,
    memory-saving backward instead of its plain operations: gradients are
    on and the code runs eagerly (``torch.compile`` sees through the plain
    operations and fuses them itself; tracing and export need them)."""
    return (torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing())
