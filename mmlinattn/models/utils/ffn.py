# Copyright (c) mmlinattn contributors. All rights reserved.
"""Feed-forward blocks shared by the families (plain MLP and ConvFFN)."""
from contextlib import nullcontext
from typing import Callable, ContextManager, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mmlinattn.utils.switch import ThreadSwitch
from .gemm import Linear, linear, matmul, weight_grad
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
# ... with at least this many rows per thread (smaller GEMMs lose more than
# the cache gains: at 14x14 the hidden tensors fit in L3 anyway) ...
_MIN_ROWS_PER_THREAD = 256
# ... and tiles only when there are at least this many tiles.
_MIN_TILES = 4
# Training runs a ConvFFN in bands once its hidden tensor is larger than
# this per thread: below, the band loop's many small ops cost more than the
# memory traffic they save (measured on whole models, paired with the
# official ones: LITv2-S and PVTv2-B0 at batch 4 train fastest with bands
# at 56x56 only, ~6.4-9.6 MiB per thread, not at 28x28, 3.2-4.8 MiB).
_BAND_TRAINING_BYTES_PER_THREAD = 6 << 20
_UNTILED = ThreadSwitch()


def untiled_mlp() -> ContextManager[None]:
    """Run every :class:`Mlp` inside the block (this thread) on its whole
    tensors, without cache tiling (for comparisons and benchmarks). With
    activation checkpointing, keep backward inside the block too: the
    recomputed forward must take the same path."""
    return _UNTILED.turned_on()


def _tile_rows(x: torch.Tensor, hidden: int,
               min_tiles: int = _MIN_TILES) -> int:
    """Rows per tile of the cache-tiled CPU MLP for tokens ``x``, 0 when it
    does not apply (not CPU fp32 / fp64, autocast, compile, tracing, fewer
    rows than ``min_tiles`` tiles, :func:`untiled_mlp`)."""
    if (_UNTILED or x.device.type != 'cpu'
            or x.dtype not in (torch.float32, torch.float64)
            or torch.is_autocast_enabled('cpu')
            or torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return 0
    threads = torch.get_num_threads()
    rows = max(threads * _TILE_BYTES_PER_THREAD //
               (hidden * x.element_size()) // 64 * 64,
               threads * _MIN_ROWS_PER_THREAD)
    return rows if x.numel() // x.shape[-1] >= min_tiles * rows else 0


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
            h.copy_(linear(fc1[0][t], fc1[1], fc1[2]))
        torch.ops.aten.gelu.out(h, approximate=approximate, out=act[:n])
        out[t] = linear(act[:n], fc2_weight, fc2_bias)
    return out


def _gelu_fc2_backward_tile(grad: torch.Tensor, hidden: torch.Tensor,
                            approximate: str, fc2_weight: torch.Tensor,
                            grad_fc2_weight: Optional[torch.Tensor],
                            need_hidden: bool = True,
                            out: Optional[torch.Tensor] = None
                            ) -> Optional[torch.Tensor]:
    """Gradient w.r.t. ``hidden`` of ``fc2(gelu(hidden))`` for one row tile
    (``None`` unless ``need_hidden``; written into ``out`` when given);
    accumulates fc2's weight gradient into ``grad_fc2_weight`` when
    given."""
    if grad_fc2_weight is not None:
        act = F.gelu(hidden, approximate=approximate)
        grad_fc2_weight += weight_grad(grad, act)
    if not need_hidden:
        return None
    if out is None:
        return torch.ops.aten.gelu_backward(
            matmul(grad, fc2_weight), hidden, approximate=approximate)
    return torch.ops.aten.gelu_backward.grad_input(
        matmul(grad, fc2_weight), hidden, approximate=approximate,
        grad_input=out)


def _band_rows(tile: int, hw: Tuple[int, int], training: bool) -> int:
    """Image rows per band of the banded ConvFFN (about a tile's tokens, at
    most half the map), 0 when the map is too small for bands to pay: a band
    needs 8 rows, to keep the recomputed halo rows cheap, and at inference
    ``2 * _MIN_ROWS_PER_THREAD`` tokens per thread (measured at 28x28, bands
    of 14 rows: 0.7x the speed of the whole map)."""
    H, W = hw
    band = min(max(tile // W, 8), H // 2)
    enough = (training or band * W >=
              2 * torch.get_num_threads() * _MIN_ROWS_PER_THREAD)
    return band if band >= 8 and enough else 0


def _bands(height: int, band: int,
           halo: int) -> Iterator[Tuple[int, int, int, int]]:
    """Bands of image rows ``[y0, y1)`` with the rows ``[a0, a1)`` a
    ``halo``-row convolution reads (clipped at the image border)."""
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        yield y0, y1, max(y0 - halo, 0), min(y1 + halo, height)


def _band_pre_activation(mlp: 'Mlp', x_rows: torch.Tensor, width: int,
                         first: int,
                         last: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """fc1 of a band's input rows (its rows and the halo rows around them),
    as the conv's channels-last input, and the depthwise conv's output for
    the band's own rows ``[first, last)`` of them. The conv pads every
    side: at the image border that is the zero padding of the whole map;
    next to a halo row it only changes the halo rows' outputs, which are
    dropped (one extra conv row instead of copying the band into a padded
    buffer)."""
    conv = mlp.dwconv.dwconv
    h = linear(x_rows, mlp.fc1.weight, mlp.fc1.bias)
    rows = h.view(1, -1, width, h.shape[-1]).permute(0, 3, 1, 2)
    out = F.conv2d(rows, conv.weight, conv.bias, padding=conv.padding,
                   groups=conv.groups)
    return rows, out[:, :, first:last]


def _conv_ffn_banded(mlp: 'Mlp', x: torch.Tensor, hw: Tuple[int, int],
                     band: int) -> torch.Tensor:
    """ConvFFN band of image rows by band, without autograd: fc1 of the band
    and its halo rows (the conv's padding above and below, zeros at the
    border), the depthwise conv, GELU and fc2 never leave the cache. Same
    values as the whole-map expression up to float summation order."""
    B, N, _ = x.shape
    H, W = hw
    halo = mlp.dwconv.dwconv.padding[0]
    act = x.new_empty(band * W, mlp.fc1.out_features)
    out = x.new_empty(B, N, mlp.fc2.out_features)
    for b in range(B):
        for y0, y1, a0, a1 in _bands(H, band, halo):
            _, pre_act = _band_pre_activation(mlp, x[b, a0 * W:a1 * W], W,
                                              y0 - a0, y1 - a0)
            n = (y1 - y0) * W
            torch.ops.aten.gelu.out(nchw_as_tokens(pre_act)[0],
                                    approximate=mlp.act.approximate,
                                    out=act[:n])
            out[b, y0 * W:y1 * W] = linear(act[:n], mlp.fc2.weight,
                                           mlp.fc2.bias)
    return out


class _BandedConvFFN(torch.autograd.Function):
    """A ConvFFN on a large map (CPU) that keeps only its input ``x`` for
    backward: forward (:func:`_conv_ffn_banded`) and backward run band by
    band of image rows, backward recomputing each band's fc1, depthwise conv
    and GELU: the band stays in the cache, so the recomputed fc1 costs
    little. Plain autograd keeps three hidden-width tensors (4-8x the input
    each, for LITv2 / PVTv2). Same values; the gradients equal autograd's
    up to float summation order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mlp: 'Mlp', hw: Tuple[int, int],
                band: int, *params: torch.Tensor) -> torch.Tensor:
        ctx.mlp, ctx.hw, ctx.band = mlp, hw, band
        ctx.save_for_backward(x)
        return _conv_ffn_banded(mlp, x, hw, band)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, = ctx.saved_tensors
        mlp, band = ctx.mlp, ctx.band
        fc1, fc2, conv = mlp.fc1, mlp.fc2, mlp.dwconv.dwconv
        need_x = ctx.needs_input_grad[0]
        need_w1, need_b1, need_w2, need_b2, need_cw, need_cb = (
            ctx.needs_input_grad[4:10])
        need_h = need_x or need_w1 or need_b1
        need_pre_act = need_h or need_cw or need_cb
        grads = [torch.zeros_like(p) if need else None for p, need in (
            (fc1.weight, need_w1), (fc1.bias, need_b1), (fc2.weight, need_w2),
            (conv.weight, need_cw), (conv.bias, need_cb))]
        grad_w1, grad_b1, grad_w2, grad_cw, grad_cb = grads
        grad_x = torch.empty_like(x) if need_x else None
        B, N, _ = x.shape
        H, W = ctx.hw
        C = fc1.out_features
        halo = conv.padding[0]
        # the conv's output gradient for a band's input rows: the band's
        # own rows, zeros for the halo rows' (dropped) outputs
        grad_out = x.new_empty((band + 2 * halo) * W, C)
        grad_h = x.new_empty(N, C) if need_h else None  # one image's
        for b in range(B):
            done = 0  # rows of grad_h written by the previous bands
            for y0, y1, a0, a1 in _bands(H, band, halo):
                first, last = y0 - a0, y1 - a0
                rows, pre_act = _band_pre_activation(
                    mlp, x[b, a0 * W:a1 * W], W, first, last)
                grad_rows_out = grad_out[:(a1 - a0) * W]
                _gelu_fc2_backward_tile(
                    grad[b, y0 * W:y1 * W], nchw_as_tokens(pre_act)[0],
                    mlp.act.approximate, fc2.weight, grad_w2, need_pre_act,
                    out=grad_rows_out[first * W:last * W])
                if not need_pre_act:
                    continue
                grad_rows_out[:first * W].zero_()
                grad_rows_out[last * W:].zero_()
                grad_rows, grad_weight, grad_bias = (
                    torch.ops.aten.convolution_backward(
                        tokens_as_nchw(grad_rows_out[None], (a1 - a0, W)),
                        rows, conv.weight, [C] if need_cb else None,
                        conv.stride, conv.padding, conv.dilation, False,
                        [0, 0], conv.groups, [need_h, need_cw, need_cb]))
                if need_h:  # rows [a0, done) hold the previous band's part
                    grad_rows = nchw_as_tokens(grad_rows)[0]
                    grad_h[a0 * W:done * W] += grad_rows[:(done - a0) * W]
                    grad_h[done * W:a1 * W] = grad_rows[(done - a0) * W:]
                    done = a1
                if need_cw:
                    grad_cw += grad_weight
                if need_cb:
                    grad_cb += grad_bias
            if need_x:
                grad_x[b] = matmul(grad_h, fc1.weight)
            if need_w1:
                grad_w1 += weight_grad(grad_h, x[b])
            if need_b1:
                grad_b1 += grad_h.sum(0)
        g = grad.reshape(-1, grad.shape[-1])
        return (grad_x, None, None, None, grad_w1, grad_b1, grad_w2,
                g.sum(0) if need_b2 else None, grad_cw, grad_cb)


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
        grad_b1 = fc1_weight.new_zeros(fc1_weight.shape[0]) if need_b1 else None
        grad_w2 = torch.zeros_like(fc2_weight) if need_w2 else None
        need_h = need_x or need_w1 or need_b1
        for t in _tiles(x2.shape[0], ctx.tile):
            grad_h = _gelu_fc2_backward_tile(g[t], hidden[t], ctx.approximate,
                                             fc2_weight, grad_w2, need_h)
            if need_w1:
                grad_w1 += weight_grad(grad_h, x2[t])
            if need_b1:
                grad_b1 += grad_h.sum(0)
            if need_x:
                grad_x[t] = matmul(grad_h, fc1_weight)
        return (grad_x.view(ctx.shape) if need_x else None, grad_w1, grad_b1,
                grad_w2, g.sum(0) if need_b2 else None, None, None)


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
            grad_weight = (torch.zeros_like(weight)
                           if ctx.needs_input_grad[4] else None)
            hidden = pre_act.detach().reshape(-1, pre_act.shape[-1])
            grad_pre_act = torch.empty_like(hidden)
            for t in _tiles(hidden.shape[0], ctx.tile):
                grad_pre_act[t] = _gelu_fc2_backward_tile(
                    g[t], hidden[t], mlp.act.approximate, weight,
                    grad_weight)
            grad_pre_act = grad_pre_act.view(pre_act.shape)
        else:  # pre_act: the activation's output
            grad_weight = weight_grad(
                g, pre_act.detach().reshape(-1, pre_act.shape[-1]).to(
                    g.dtype)).to(weight.dtype)
            grad_pre_act = matmul(grad, weight.to(grad.dtype))
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

    On CPU (fp32 / fp64, eager, GELU) large inputs run on cache-sized row
    tiles, so the hidden-width activations do not stream through memory
    between the ops: the plain MLP tile by tile in forward and backward
    (:class:`_TiledMlp`), the ConvFFN on large maps in bands of image rows
    (:func:`_conv_ffn_banded`; training keeps only its input,
    :class:`_BandedConvFFN`), and otherwise its GELU + ``fc2`` tail in
    tiles. Values equal the plain expression up to float summation order.
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
        self.fc1 = Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features) if use_dwconv else None
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features)
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

    def _tileable(self) -> bool:
        """The tiled paths call the ops, not the modules: they apply to
        plain :class:`Linear` layers with biases and a GELU, without hooks."""
        modules = [self.fc1, self.act, self.fc2]
        if self.dwconv is not None:
            modules += [self.dwconv, self.dwconv.dwconv]
        return (type(self.fc1) is Linear and type(self.fc2) is Linear
                and self.fc1.bias is not None and self.fc2.bias is not None
                and isinstance(self.act, nn.GELU)
                and not any(m._forward_hooks or m._forward_pre_hooks
                            for m in modules)
                and not nn.modules.module._global_forward_hooks
                and not nn.modules.module._global_forward_pre_hooks)

    def band_rows(self, x: torch.Tensor, hw: Optional[Tuple[int, int]],
                  training: bool) -> int:
        """Image rows per band of the banded ConvFFN for tokens ``x``, 0 for
        the whole-map path (no depthwise conv, no or a mismatching grid, no
        cache tiling, too little data)."""
        if (not self._tileable() or self.dwconv is None or hw is None
                or x.dim() != 3 or hw[0] * hw[1] != x.shape[1]):
            return 0
        hidden = self.fc1.out_features
        if training:
            tile = _tile_rows(x, hidden, min_tiles=0)
            if (x.numel() // x.shape[-1] * hidden * x.element_size() <
                    torch.get_num_threads() * _BAND_TRAINING_BYTES_PER_THREAD):
                return 0
        else:
            tile = _tile_rows(x, hidden)
        return _band_rows(tile, hw, training) if tile else 0

    def _tiled_inference(self, x: torch.Tensor,
                         hw: Optional[Tuple[int, int]],
                         tile: int) -> torch.Tensor:
        """The no-grad forward on cache-sized tiles (CPU)."""
        fc2 = (self.fc2.weight, self.fc2.bias)
        if self.dwconv is None:  # fc1 tile by tile too, into scratch
            x2 = x.reshape(-1, x.shape[-1])
            out = _gelu_fc2_tiled(
                x2.new_empty(tile, self.fc1.out_features),
                self.act.approximate, *fc2, tile,
                fc1=(x2, self.fc1.weight, self.fc1.bias))
            return out.view(*x.shape[:-1], -1)
        band = self.band_rows(x, hw, training=False)
        if band:
            return _conv_ffn_banded(self, x, hw, band)
        hidden = self.pre_activation(self.fc1(x), hw)
        out = _gelu_fc2_tiled(hidden.reshape(-1, hidden.shape[-1]),
                              self.act.approximate, *fc2, tile)
        return out.view(*x.shape[:-1], -1)

    def forward(self,
                x: torch.Tensor,
                hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        if self.training and self.drop.p > 0:  # dropout inside: plain
            return self.drop(
                self.fc2(self.drop(self.activate(self.fc1(x), hw))))
        tile = (_tile_rows(x, self.fc1.out_features)
                if self._tileable() else 0)
        if tile and not (torch.is_grad_enabled() and
                         (x.requires_grad or any(p.requires_grad
                                                 for p in self.parameters()))):
            return self._tiled_inference(x, hw, tile)
        if not hand_written_backward_applies():
            return self.fc2(self.activate(self.fc1(x), hw))
        if tile and self.dwconv is None:
            return _TiledMlp.apply(x, self.fc1.weight, self.fc1.bias,
                                   self.fc2.weight, self.fc2.bias,
                                   self.act.approximate, tile)
        band = self.band_rows(x, hw, training=True)
        if band:
            return _BandedConvFFN.apply(
                x, self, hw, band, self.fc1.weight, self.fc1.bias,
                self.fc2.weight, self.fc2.bias, self.dwconv.dwconv.weight,
                self.dwconv.dwconv.bias)
        x = self.fc1(x)
        if not x.requires_grad:
            return self.fc2(self.activate(x, hw))
        params = [self.fc2.weight, self.fc2.bias]
        if self.dwconv is not None:
            params += [self.dwconv.dwconv.weight, self.dwconv.dwconv.bias]
        return _RecomputedTail.apply(x, self, hw, tile, *params)
