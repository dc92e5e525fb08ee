# Copyright (c) mmlinattn contributors. All rights reserved.
"""Feed-forward blocks shared by the families (plain MLP and ConvFFN)."""
from contextlib import nullcontext
from typing import Callable, Iterator, Optional, Tuple

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


# The CPU path keeps a row tile's hidden activations in the cores' L2
# caches: about this many bytes of a hidden-width tile per thread ...
_TILE_BYTES_PER_THREAD = 1 << 20
# ... and tiles only when there are at least this many tiles.
_MIN_TILES = 4


def _tile_rows(x: torch.Tensor, hidden: int) -> int:
    """Rows per tile of the cache-tiled CPU MLP for tokens ``x``, 0 when it
    does not apply (not CPU fp32 / fp64, autocast, compile, tracing, too few
    rows)."""
    if (x.device.type != 'cpu' or x.dtype not in (torch.float32,
                                                  torch.float64)
            or torch.is_autocast_enabled('cpu')
            or torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return 0
    rows = (torch.get_num_threads() * _TILE_BYTES_PER_THREAD //
            (hidden * x.element_size())) // 64 * 64
    rows = max(rows, 64)
    return rows if x.numel() // x.shape[-1] >= _MIN_TILES * rows else 0


def _tiles(rows: int, tile: int) -> Iterator[slice]:
    return (slice(s, min(s + tile, rows)) for s in range(0, rows, tile))


def _gelu_fc2_tiled(hidden: torch.Tensor, approximate: str,
                    fc2_weight: torch.Tensor, fc2_bias: torch.Tensor,
                    tile: int,
                    fc1: Optional[Tuple[torch.Tensor, torch.Tensor,
                                        torch.Tensor]] = None
                    ) -> torch.Tensor:
    """``fc2(gelu(hidden))`` over (M, hidden) rows, one row tile at a time
    so that the tile's activation never leaves the cache.

    With ``fc1 = (x, weight, bias)``, each tile of ``hidden`` is first
    written as ``fc1(x)`` of its rows (``hidden`` is then the output buffer
    of fc1, or a tile-sized scratch buffer when nothing keeps it).
    """
    rows = (fc1[0] if fc1 is not None else hidden).shape[0]
    out = fc2_weight.new_empty(rows, fc2_weight.shape[0])
    act = hidden.new_empty(min(tile, rows), hidden.shape[1])
    scratch = fc1 is not None and hidden.shape[0] != rows
    for t in _tiles(rows, tile):
        n = t.stop - t.start
        h = hidden[:n] if scratch else hidden[t]
        if fc1 is not None:
            torch.addmm(fc1[2], fc1[0][t], fc1[1].t(), out=h)
        torch.ops.aten.gelu.out(h, approximate=approximate, out=act[:n])
        torch.addmm(fc2_bias, act[:n], fc2_weight.t(), out=out[t])
    return out


def _gelu_fc2_backward_tile(grad: torch.Tensor, hidden: torch.Tensor,
                            approximate: str, fc2_weight: torch.Tensor,
                            grad_fc2_weight: Optional[torch.Tensor]
                            ) -> torch.Tensor:
    """Gradient w.r.t. ``hidden`` of ``fc2(gelu(hidden))`` for one row tile;
    accumulates fc2's weight gradient into ``grad_fc2_weight`` when given."""
    if grad_fc2_weight is not None:
        act = F.gelu(hidden, approximate=approximate)
        grad_fc2_weight.addmm_(grad.t(), act)
    return torch.ops.aten.gelu_backward(
        grad @ fc2_weight, hidden, approximate=approximate)


class _TiledMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` of a plain :class:`Mlp` on CPU, row tile by row
    tile in forward and backward: the hidden-width tensors of a tile stay in
    the cache, and only fc1's output is kept for backward (plus ``x``, which
    fc1 keeps under autograd too). Same values as the plain expression up to
    float summation order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fc1_weight: torch.Tensor,
                fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                fc2_bias: torch.Tensor, approximate: str,
                tile: int) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        hidden = x2.new_empty(x2.shape[0], fc1_weight.shape[0])
        out = _gelu_fc2_tiled(hidden, approximate, fc2_weight, fc2_bias,
                              tile, fc1=(x2, fc1_weight, fc1_bias))
        ctx.approximate, ctx.tile, ctx.shape = approximate, tile, x.shape
        ctx.save_for_backward(x2, hidden, fc1_weight, fc2_weight)
        return out.view(*x.shape[:-1], -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x2, hidden, fc1_weight, fc2_weight = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = torch.empty_like(x2) if need_x else None
        grad_w1 = torch.zeros_like(fc1_weight) if need_w1 else None
        grad_b1 = fc1_weight.new_zeros(fc1_weight.shape[0])
        grad_w2 = torch.zeros_like(fc2_weight) if need_w2 else None
        for t in _tiles(x2.shape[0], ctx.tile):
            grad_h = _gelu_fc2_backward_tile(g[t], hidden[t], ctx.approximate,
                                             fc2_weight, grad_w2)
            if need_w1:
                grad_w1.addmm_(grad_h.t(), x2[t])
            if need_b1:
                grad_b1 += grad_h.sum(0)
            if need_x:
                torch.mm(grad_h, fc1_weight, out=grad_x[t])
        return (grad_x.view(ctx.shape) if need_x else None, grad_w1,
                grad_b1 if need_b1 else None, grad_w2,
                g.sum(0) if need_b2 else None, None, None)


class _RecomputedTail(torch.autograd.Function):
    """``fc2(act([dwconv](h)))`` of an :class:`Mlp` that keeps only ``h``
    (the output of ``fc1``) for backward.

    Plain autograd keeps every hidden-width tensor of the tail: the input of
    the ConvFFN's depthwise conv, the input of the activation and the input
    of ``fc2``. Backward here recomputes the cheap, memory-bound depthwise
    conv and activation from ``h`` (under the autocast state of the
    forward) and applies ``fc2``'s gradient by hand, so an MLP keeps one
    hidden-width tensor instead of two (ConvFFN: three). With ``tile > 0``
    (CPU, GELU) activation and ``fc2`` run row tile by row tile in both
    directions (see :func:`_gelu_fc2_tiled`). Same values; the gradients
    equal autograd's up to float summation order.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, mlp: 'Mlp', hw: Optional[Tuple[int,
                                                                     int]],
                tile: int, *params: torch.Tensor) -> torch.Tensor:
        ctx.mlp, ctx.hw, ctx.tile = mlp, hw, tile
        device = h.device.type
        # devices without autocast (e.g. 'meta' in shape checks) have none
        ctx.autocast = (device, torch.is_autocast_enabled(device),
                        torch.get_autocast_dtype(device)
                        ) if torch.amp.is_autocast_available(device) else None
        ctx.save_for_backward(h)
        if tile:
            hidden = mlp.pre_activation(h, hw)
            out = _gelu_fc2_tiled(hidden.reshape(-1, hidden.shape[-1]),
                                  mlp.act.approximate, mlp.fc2.weight,
                                  mlp.fc2.bias, tile)
            return out.view(*h.shape[:-1], -1)
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
        weight, bias = mlp.fc2.weight, mlp.fc2.bias
        g = grad.reshape(-1, grad.shape[-1])
        grad_bias = g.sum(0).to(bias.dtype) if bias is not None else None
        with torch.enable_grad(), autocast:
            h = h.detach().requires_grad_(ctx.needs_input_grad[0])
            pre_act = (mlp.pre_activation(h, ctx.hw) if ctx.tile else
                       mlp.activate(h, ctx.hw))
        if ctx.tile:  # pre_act: the input of the GELU
            grad_weight = torch.zeros_like(weight)
            hidden = pre_act.detach().reshape(-1, pre_act.shape[-1])
            grad_pre_act = torch.empty_like(hidden)
            for t in _tiles(hidden.shape[0], ctx.tile):
                grad_pre_act[t] = _gelu_fc2_backward_tile(
                    g[t], hidden[t], mlp.act.approximate, weight,
                    grad_weight)
            grad_pre_act = grad_pre_act.view(pre_act.shape)
        else:  # pre_act: the activation's output
            grad_weight = (g.t() @ pre_act.detach().reshape(
                -1, pre_act.shape[-1]).to(g.dtype)).to(weight.dtype)
            grad_pre_act = grad @ weight.to(grad.dtype)
        inputs = [h] + ([conv.weight, conv.bias] if conv is not None else [])
        wanted = [t for t in inputs if t.requires_grad]
        found = iter(torch.autograd.grad(pre_act, wanted, grad_pre_act))
        grads = [next(found) if t.requires_grad else None for t in inputs]
        conv_grads = grads[1:] if conv is not None else []
        return (grads[0], None, None, None, grad_weight, grad_bias,
                *conv_grads)


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

    def pre_activation(self, x: torch.Tensor,
                       hw: Optional[Tuple[int, int]]) -> torch.Tensor:
        """``[dwconv](x)``: what the activation is applied to."""
        if self.dwconv is None:
            return x
        if hw is None:
            raise ValueError('Mlp(use_dwconv=True) needs the token grid '
                             'hw=(H, W)')
        return self.dwconv(x, hw)

    def activate(self, x: torch.Tensor,
                 hw: Optional[Tuple[int, int]]) -> torch.Tensor:
        """``act([dwconv](x))``: the hidden-width part between the Linears."""
        return self.act(self.pre_activation(x, hw))

    def forward(self,
                x: torch.Tensor,
                hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        if self.training and self.drop.p > 0:  # dropout inside: plain
            return self.drop(
                self.fc2(self.drop(self.activate(self.fc1(x), hw))))
        tile = (_tile_rows(x, self.fc1.out_features)
                if isinstance(self.act, nn.GELU) else 0)
        fc2 = (self.fc2.weight, self.fc2.bias)
        if tile and not torch.is_grad_enabled():
            if self.dwconv is None:  # fc1 tile by tile too, into scratch
                x2 = x.reshape(-1, x.shape[-1])
                out = _gelu_fc2_tiled(
                    x2.new_empty(tile, self.fc1.out_features),
                    self.act.approximate, *fc2, tile,
                    fc1=(x2, self.fc1.weight, self.fc1.bias))
            else:
                hidden = self.dwconv(self.fc1(x), hw)
                out = _gelu_fc2_tiled(
                    hidden.reshape(-1, hidden.shape[-1]),
                    self.act.approximate, *fc2, tile)
            return out.view(*x.shape[:-1], -1)
        if not hand_written_backward_applies():
            return self.fc2(self.activate(self.fc1(x), hw))
        if tile and self.dwconv is None:
            return _TiledMlp.apply(x, self.fc1.weight, self.fc1.bias, *fc2,
                                   self.act.approximate, tile)
        x = self.fc1(x)
        if not x.requires_grad:
            return self.fc2(self.activate(x, hw))
        params = list(fc2)
        if self.dwconv is not None:
            params += [self.dwconv.dwconv.weight, self.dwconv.dwconv.bias]
        return _RecomputedTail.apply(x, self, hw, tile, *params)
