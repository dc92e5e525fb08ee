# Copyright (c) mmlinattn contributors. All rights reserved.
"""Float32 regions: parts of an attention that must not run in half
precision (sums over all tokens, norms, kernels, matrix inverses)."""
import contextlib
from typing import Callable, ContextManager

import torch


def autocast_off(device_type: str) -> ContextManager:
    """Disable autocast on ``device_type`` (a no-op where it has none or it
    is not enabled)."""
    if (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def run_in_float32(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor,
                   **kwargs) -> torch.Tensor:
    """``fn(*tensors, **kwargs)`` with autocast off and every tensor promoted
    to at least float32 (float64 stays float64); the result comes back in the
    dtype of the first tensor. Without autocast and with float32 / float64
    inputs this is a plain call."""
    dtype = tensors[0].dtype
    compute = [
        t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors
    ]
    with autocast_off(tensors[0].device.type):
        return fn(*compute, **kwargs).to(dtype)
