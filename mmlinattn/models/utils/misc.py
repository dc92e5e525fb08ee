# Copyright (c) mmlinattn contributors. All rights reserved.
"""Small helpers shared by the families: stochastic depth, activation
checkpointing, LayerNorm outputs recomputed in backward and when
hand-written backward passes apply."""
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
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


def _saved_tensor_hooks_active() -> bool:
    top = getattr(torch._C._autograd, '_top_saved_tensors_default_hooks',
                  None)
    return top is None or top(False) is not None


def branch_of_recomputed_norm(branch: Callable[..., torch.Tensor],
                              norm: nn.LayerNorm, x: torch.Tensor,
                              *args: Any) -> torch.Tensor:
    """``branch(norm(x), *args)``, where what the branch keeps of
    ``norm(x)`` for backward is not kept but recomputed from ``x`` in
    backward (the LayerNorm keeps ``x`` anyway): a pre-norm block then keeps
    one token tensor less per branch, for one more LayerNorm in backward
    (selective recomputation, Korthikanti et al., 2022). Same values and
    gradients (the same kernel recomputes the same output), second-order
    gradients included.

    The plain expression runs without gradients, under autocast (the branch
    saves casts, not the output), in ``torch.compile`` / tracing, inside
    other saved-tensor hooks (activation checkpointing, offloading) and for
    a norm with hooks or of another type. What the branch saves after
    modifying ``norm(x)`` in place is kept as it is."""
    y = norm(x)
    if not (y.requires_grad and hand_written_backward_applies()
            and type(norm) is nn.LayerNorm
            and not (norm._forward_hooks or norm._forward_pre_hooks)
            and y.is_contiguous() and y.storage_offset() == 0
            and not torch.is_autocast_enabled(y.device.type)
            and not _saved_tensor_hooks_active()):
        return branch(y, *args)
    storage = y.untyped_storage()
    address, nbytes, version = storage.data_ptr(), storage.nbytes(), y._version
    shape, eps = norm.normalized_shape, norm.eps
    weight, bias = norm.weight, norm.bias
    recomputed = []

    def pack(t: torch.Tensor) -> Any:
        s = t.untyped_storage()
        if (s.data_ptr() == address and s.nbytes() == nbytes
                and t._version == version):
            return t.shape, t.stride(), t.storage_offset()
        return t

    def unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        if not recomputed or torch.is_grad_enabled():  # create_graph: a graph
            recomputed[:] = [F.layer_norm(x, shape, weight, bias, eps)]
        return recomputed[0].as_strided(*packed)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return branch(y, *args)
