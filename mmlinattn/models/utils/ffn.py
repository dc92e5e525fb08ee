# Copyright (c) mmlinattn contributors. All rights reserved.
"""Feed-forward blocks shared by the families (plain MLP and ConvFFN)."""
from contextlib import nullcontext
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .layout import nchw_as_tokens, tokens_as_nchw
from .misc import hand_written_backward_applies


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


class _RecomputedTail(torch.autograd.Function):
    """``fc2(act([dwconv](h)))`` of an :class:`Mlp` that keeps only ``h``
    (the output of ``fc1``) for backward.

    Plain autograd keeps every hidden-width tensor of the tail: the input of
    the ConvFFN's depthwise conv, the input of the activation and the input
    of ``fc2``. Backward here recomputes the cheap, memory-bound depthwise
    conv and activation from ``h`` (under the autocast state of the
    forward) and applies ``fc2``'s gradient by hand, so an MLP keeps one
    hidden-width tensor instead of two (ConvFFN: three). Same values; the
    gradients equal autograd's up to float summation order.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, mlp: 'Mlp', hw: Optional[Tuple[int,
                                                                     int]],
                *params: torch.Tensor) -> torch.Tensor:
        ctx.mlp, ctx.hw = mlp, hw
        device = h.device.type
        # devices without autocast (e.g. 'meta' in shape checks) have none
        ctx.autocast = (device, torch.is_autocast_enabled(device),
                        torch.get_autocast_dtype(device)
                        ) if torch.amp.is_autocast_available(device) else None
        ctx.save_for_backward(h)
        return mlp.fc2(mlp.activate(h, hw))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        h, = ctx.saved_tensors
        mlp = ctx.mlp
        conv = mlp.dwconv.dwconv if mlp.dwconv is not None else None
        autocast = (torch.autocast(ctx.autocast[0], dtype=ctx.autocast[2],
                                   enabled=ctx.autocast[1])
                    if ctx.autocast is not None else nullcontext())
        with torch.enable_grad(), autocast:
            h = h.detach().requires_grad_(ctx.needs_input_grad[0])
            act = mlp.activate(h, ctx.hw)
        weight, bias = mlp.fc2.weight, mlp.fc2.bias
        g = grad.reshape(-1, grad.shape[-1])
        grad_weight = (g.t() @ act.detach().reshape(-1, act.shape[-1]).to(
            g.dtype)).to(weight.dtype)
        grad_bias = g.sum(0).to(bias.dtype) if bias is not None else None
        grad_act = grad @ weight.to(grad.dtype)
        inputs = [h] + ([conv.weight, conv.bias] if conv is not None else [])
        wanted = [t for t in inputs if t.requires_grad]
        found = iter(torch.autograd.grad(act, wanted, grad_act))
        grads = [next(found) if t.requires_grad else None for t in inputs]
        conv_grads = grads[1:] if conv is not None else []
        return (grads[0], None, None, grad_weight, grad_bias, *conv_grads)


class Mlp(nn.Module):
    """``fc1 -> [DWConv] -> act -> drop -> fc2 -> drop``.

    With ``use_dwconv=True`` this is the ConvFFN of PVTv2 (Wang et al., 2022)
    and LITv2 (Pan et al., NeurIPS 2022); it then needs the token grid
    ``hw`` in :meth:`forward`. When training without dropout inside, the
    part after ``fc1`` keeps only ``fc1``'s output for backward (see
    :class:`_RecomputedTail`).
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

    def activate(self, x: torch.Tensor,
                 hw: Optional[Tuple[int, int]]) -> torch.Tensor:
        """``act([dwconv](x))``: the hidden-width part between the Linears."""
        if self.dwconv is not None:
            if hw is None:
                raise ValueError('Mlp(use_dwconv=True) needs the token grid '
                                 'hw=(H, W)')
            x = self.dwconv(x, hw)
        return self.act(x)

    def forward(self,
                x: torch.Tensor,
                hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        x = self.fc1(x)
        if (hand_written_backward_applies() and x.requires_grad
                and not (self.training and self.drop.p > 0)):
            params = [self.fc2.weight, self.fc2.bias]
            if self.dwconv is not None:
                params += [self.dwconv.dwconv.weight, self.dwconv.dwconv.bias]
            return self.drop(_RecomputedTail.apply(x, self, hw, *params))
        return self.drop(self.fc2(self.drop(self.activate(x, hw))))
