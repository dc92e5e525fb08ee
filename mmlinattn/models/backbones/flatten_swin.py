# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLatten-Swin: Swin Transformer with focused linear attention.

Han, Pan, Han, Song, Huang: "FLatten Transformer: Vision Transformer using
Focused Linear Attention", ICCV 2023 (https://arxiv.org/abs/2308.00442,
official code https://github.com/LeapLabTHU/FLatten-Transformer), applied to
Swin Transformer (Liu et al., ICCV 2021).

Stages marked ``'L'`` in ``attn_type`` (stages 1-2 of the released models)
run :class:`FocusedLinearAttention` globally over the whole feature map
(no window, no shift, no mask, no relative bias), as the official model
does with its 56 / 96 "window" that covers every stage. Stages marked
``'S'`` are plain Swin: 7 x 7 (12 x 12 for the 384 model) windows with a
relative position bias, cyclic shift every second block and the -100 shift
mask. For dense prediction the linear stages stay global (no padding) and
only the softmax windows are padded; padded tokens are masked out of the
keys, so features of real tokens do not depend on how much padding a size
needs. Parameter names follow the official checkpoints inside every block,
so :func:`convert_flatten_swin_official` only renames containers.
"""
import re
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from mmlinattn.registry import register_model
from ..attention.focused_linear_attention import FocusedLinearAttention
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Mlp, build_drop_path,
                     checkpoint_call, resize_pos_embed, tokens_to_nchw)

Grid = Tuple[int, int]

# Logit offset of Swin's shift mask (kept for parity with the checkpoints).
MASK_VALUE = -100.


def parse_attn_type(attn_type: str, depths: List[int]) -> List[List[str]]:
    """Per-block ``'L'`` / ``'S'`` from the official per-stage string.

    One character per stage: ``L`` focused linear attention, ``S`` the
    backbone's softmax attention, ``M`` the first ``k`` blocks ``L`` and the
    rest ``S``, with ``k`` written after the stage characters (``'LLMS3'``).
    """
    num_stages = len(depths)
    stages, suffix = attn_type[:num_stages], attn_type[num_stages:]
    valid = (
        isinstance(attn_type, str) and len(stages) == num_stages
        and not set(stages) - set('LSM')
        and (suffix.isdigit() if 'M' in stages else suffix == ''))
    if not valid:
        raise ValueError(
            f'attn_type must be {num_stages} characters from L (focused '
            'linear), S (softmax), M (first k blocks L, the rest S) followed '
            f"by k if M is used, e.g. 'LLSS' or 'LLMS3'; got {attn_type!r}")
    k = int(suffix) if suffix else 0
    return [[('L' if j < k else 'S') if c == 'M' else c for j in range(d)]
            for c, d in zip(stages, depths)]


def window_partition(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, wh * ww, C), windows in row-major order."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows: torch.Tensor, window: Grid,
                   hw: Grid) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    (wh, ww), (H, W) = window, hw
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def region_mask(hw: Grid, padded_hw: Grid, window: Grid, shift: int,
                device: torch.device) -> Optional[torch.Tensor]:
    """Additive (nW, N, N) attention mask for windows of a padded, cyclically
    shifted map, or ``None`` when no token must be hidden.

    Tokens attend only to tokens of their own region: Swin's shift regions
    (the wrapped-around border strips) and, as an extra region, the padding,
    so real queries never see padded keys.
    """
    (H, W), (Hp, Wp) = hw, padded_hw
    if shift == 0 and (H, W) == (Hp, Wp):
        return None
    labels = torch.zeros(Hp, Wp, device=device)
    if shift > 0:
        bounds = [(0, -window[0]), (-window[0], -shift), (-shift, None)]
        cols = [(0, -window[1]), (-window[1], -shift), (-shift, None)]
        for i, (h0, h1) in enumerate(bounds):
            for j, (w0, w1) in enumerate(cols):
                labels[h0:h1, w0:w1] = 3 * i + j
    padding = torch.ones(Hp, Wp, dtype=torch.bool, device=device)
    padding[:H, :W] = False
    padding = torch.roll(padding, (-shift, -shift), (0, 1))
    labels[padding] = -1
    labels = window_partition(labels.view(1, Hp, Wp, 1), window).squeeze(-1)
    mask = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(
        mask.shape, device=device).masked_fill_(mask, MASK_VALUE)


class WindowAttention(nn.Module):
    """Swin's window softmax attention with a learnt relative position bias
    (``relative_position_bias_table``, official name) on
    ``F.scaled_dot_product_attention``."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible '
                             f'by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        coords = torch.stack(
            torch.meshgrid(
                torch.arange(window_size),
                torch.arange(window_size),
                indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]) + window_size - 1
        self.register_buffer(
            'relative_position_index',
            rel[0] * (2 * window_size - 1) + rel[1],
            persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(h, N, N) bias for one window."""
        N = self.window_size**2
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)]
        return bias.view(N, N, -1).permute(2, 0, 1)

    def forward(self,
                x: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B * nW, N, C) windows, optional additive (nW, N, N) mask."""
        B_, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias()
        if mask is not None:
            nW = mask.shape[0]
            q, k, v = (t.view(B_ // nW, nW, h, N, C // h) for t in (q, k, v))
            bias = bias + mask.unsqueeze(1)
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.)
        x = x.reshape(B_, h, N, C // h).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class FLattenSwinBlock(nn.Module):
    """Swin block with either global focused linear attention (``'L'``) or
    (shifted) window softmax attention (``'S'``).

    Args:
        embed_dims, num_heads, mlp_ratio, qkv_bias: as Swin.
        attn_type: ``'L'`` or ``'S'``.
        window_size: softmax window (``'S'``).
        shift: shift the windows by ``window_size // 2`` (``'S'``, odd
            blocks); skipped when the map is not larger than a window, as in
            the official model.
        key_grid: pretraining token grid of the stage, which the linear
            attention's ``positional_encoding`` is learnt for (``'L'``).
        focusing_factor, kernel_size, fp32_attention: see
            :class:`FocusedLinearAttention`.
        drop_rate, attn_drop_rate, drop_path_rate: dropout after projections
            and MLP, softmax attention dropout, stochastic depth.
        with_cp: activation checkpointing.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_type: str = 'L',
                 window_size: int = 7,
                 shift: bool = False,
                 key_grid: Optional[Grid] = None,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 focusing_factor: float = 3.,
                 kernel_size: int = 5,
                 fp32_attention: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False):
        super().__init__()
        self.attn_type = attn_type
        self.window_size = window_size
        self.shift = shift
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        if attn_type == 'L':
            self.attn = FocusedLinearAttention(
                embed_dims,
                num_heads,
                key_grid=key_grid,
                qkv_layout='qkv',
                qkv_bias=qkv_bias,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
                proj_drop=drop_rate,
                fp32_attention=fp32_attention)
        else:
            self.attn = WindowAttention(
                embed_dims,
                num_heads,
                window_size,
                qkv_bias=qkv_bias,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate)
        self.drop_path = build_drop_path(drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)

    def window_attention(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """Pad to whole windows, shift, attend per window, undo."""
        B, N, C = x.shape
        H, W = hw
        w = self.window_size
        shift = w // 2 if self.shift and min(H, W) > w else 0
        x = x.view(B, H, W, C)
        pad_b, pad_r = (-H) % w, (-W) % w
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_hw = (H + pad_b, W + pad_r)
        if shift:
            x = torch.roll(x, (-shift, -shift), (1, 2))
        mask = region_mask(hw, padded_hw, (w, w), shift, x.device)
        x = self.attn(window_partition(x, (w, w)), mask)
        x = window_reverse(x, (w, w), padded_hw)
        if shift:
            x = torch.roll(x, (shift, shift), (1, 2))
        return x[:, :H, :W].reshape(B, N, C)

    def _forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        y = self.norm1(x)
        if self.attn_type == 'L':
            y = self.attn(y, hw)
        else:
            y = self.window_attention(y, hw)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, H*W, C) tokens on grid ``hw`` -> (B, H*W, C)."""
        return checkpoint_call(self._forward, x, hw, enabled=self.with_cp)


class SwinPatchMerging(nn.Module):
    """2 x 2 neighbourhood concat -> LayerNorm(4C) -> Linear(4C, 2C).

    Concatenation order (0,0), (1,0), (0,1), (1,1) as the official Swin /
    FLatten code (no weight permutation needed, unlike ``nn.Unfold``-based
    merging); odd maps are zero-padded at the bottom / right.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        B, N, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, i::2, j::2] for j in (0, 1) for i in (0, 1)], -1)
        hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.view(B, -1, 4 * C))), hw


class FLattenSwinStage(nn.Module):
    """Optional patch merging (stages 2-4), then the blocks."""

    def __init__(self, downsample: Optional[nn.Module],
                 blocks: List[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        for block in self.blocks:
            x = block(x, hw)
        return x, hw


def resize_relative_position_bias_table(table: torch.Tensor,
                                        window_size: int) -> torch.Tensor:
    """((2w'-1)^2, h) table -> ((2w-1)^2, h), bicubic as the official
    224 -> 384 fine-tune."""
    src = int(round(table.shape[0]**0.5))
    dst = 2 * window_size - 1
    if src == dst:
        return table
    grid = table.T.reshape(1, -1, src, src).float()
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic')
    return grid.reshape(-1, dst * dst).T.to(table.dtype)


def resize_grid_params(model: nn.Module, state_dict: dict,
                       prefix: str) -> None:
    """For a ``load_state_dict`` pre-hook: adapt ``positional_encoding``
    learnt on another square grid and relative-bias tables of another
    window size (e.g. a 224 checkpoint loaded for 384 fine-tuning), bicubic
    as the official ``load_pretrained``."""
    for name, module in model.named_modules():
        if isinstance(module, FocusedLinearAttention):
            key = f'{prefix}{name}.positional_encoding'
            value = state_dict.get(key)
            if (value is None or module.positional_encoding is None
                    or value.shape == module.positional_encoding.shape):
                continue
            side = int(round(value.shape[1]**0.5))
            if value.dim() != 3 or side * side != value.shape[1]:
                continue  # load_state_dict reports the mismatch
            state_dict[key] = resize_pos_embed(
                value, (side, side),
                module.key_grid,
                mode=module.pos_interp_mode)
            warnings.warn(f'{key}: resized {side}x{side} -> '
                          f'{module.key_grid[0]}x{module.key_grid[1]}')
        elif isinstance(module, WindowAttention):
            key = f'{prefix}{name}.relative_position_bias_table'
            value = state_dict.get(key)
            if (value is None or value.shape
                    == module.relative_position_bias_table.shape):
                continue
            state_dict[key] = resize_relative_position_bias_table(
                value, module.window_size)
            warnings.warn(f'{key}: resized to window {module.window_size}')


@register_model()
class FLattenSwin(LinAttnBackbone):
    """FLatten-Swin backbone (Swin Transformer with focused linear
    attention in the ``'L'`` stages).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'base-384'`` (aliases
            ``t s b b-384``) or a dict with ``embed_dims``, ``depths``,
            ``num_heads`` (and optionally ``pretrain_img_size``,
            ``window_size``).
        in_channels: input image channels.
        patch_size: patch embedding stride (4).
        pretrain_img_size: image size the model was trained at (224, 384
            for ``base-384``); the linear stages' ``positional_encoding`` is
            learnt on its stage grids and resized (bicubic) at run time
            when the feature map differs.
        window_size: window of the softmax stages (7; 12 for ``base-384``).
        attn_type: per stage ``L`` / ``S`` / ``M`` (see
            :func:`parse_attn_type`); ``'LLSS'`` in every released model.
        mlp_ratio, qkv_bias: as Swin.
        focusing_factor: focusing power p (3).
        kernel_size: DWC kernel of the linear attention (5).
        fp32_attention: see :class:`FocusedLinearAttention`.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, softmax
            attention dropout, stochastic depth (linear over all blocks).
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see
            :class:`LinAttnBackbone`; a LayerNorm ``norm{i}`` is created for
            every output stage (``norm3`` is the official final ``norm``).
        with_cp: activation checkpointing in every block.
    """
    _base = dict(
        embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'],
                        dict(embed_dims=96, depths=[2, 2, 6, 2],
                             num_heads=[3, 6, 12, 24])),
        **dict.fromkeys(['s', 'small'],
                        dict(embed_dims=96, depths=[2, 2, 18, 2],
                             num_heads=[3, 6, 12, 24])),
        **dict.fromkeys(['b', 'base'], _base),
        **dict.fromkeys(['b-384', 'base-384'],
                        dict(pretrain_img_size=384, window_size=12, **_base)),
    }  # yapf: disable
    essential_keys = ('embed_dims', 'depths', 'num_heads')

    def __init__(self,
                 arch='tiny',
                 in_channels: int = 3,
                 patch_size: int = 4,
                 pretrain_img_size: Optional[int] = None,
                 window_size: Optional[int] = None,
                 attn_type: str = 'LLSS',
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 focusing_factor: float = 3.,
                 kernel_size: int = 5,
                 fp32_attention: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 out_indices=(3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            pretrained=pretrained,
            init_cfg=init_cfg)
        arch = self.resolve_arch(arch)
        depths, num_heads = list(arch['depths']), list(arch['num_heads'])
        if len(depths) != self.num_stages or len(num_heads) != self.num_stages:
            raise ValueError(f'arch needs {self.num_stages} depths and '
                             f'num_heads, got {depths!r}, {num_heads!r}')
        self.pretrain_img_size = int(
            pretrain_img_size or arch.get('pretrain_img_size', 224))
        self.window_size = int(window_size or arch.get('window_size', 7))
        if self.window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        self.attn_type = attn_type
        block_types = parse_attn_type(attn_type, depths)
        self.embed_dims = [arch['embed_dims'] * 2**i for i in range(4)]
        self.num_features = self.embed_dims

        self.patch_embed = ConvPatchEmbed(
            in_channels,
            self.embed_dims[0],
            patch_size,
            patch_size,
            pad_to_stride=True)
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = [
            drop_path_rate * j / max(sum(depths) - 1, 1)
            for j in range(sum(depths))
        ]  # linear stochastic depth
        grid = -(-self.pretrain_img_size // patch_size)
        stages = []
        for i, (dims, heads) in enumerate(zip(self.embed_dims, num_heads)):
            downsample = None
            if i > 0:
                downsample = SwinPatchMerging(self.embed_dims[i - 1], dims)
                grid = -(-grid // 2)
            blocks = [
                FLattenSwinBlock(
                    dims,
                    heads,
                    attn_type=block_types[i][j],
                    window_size=self.window_size,
                    shift=j % 2 == 1,
                    key_grid=(grid, grid),
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    focusing_factor=focusing_factor,
                    kernel_size=kernel_size,
                    fp32_attention=fp32_attention,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    drop_path_rate=dpr[sum(depths[:i]) + j],
                    with_cp=with_cp) for j in range(depths[i])
            ]
            stages.append(FLattenSwinStage(downsample, blocks))
        self.stages = nn.ModuleList(stages)
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i]))
        self.apply(_official_init)
        self._register_load_state_dict_pre_hook(self._resize_grid_params)

    def _resize_grid_params(self, state_dict: dict, prefix: str, *args,
                            **kwargs) -> None:
        resize_grid_params(self, state_dict, prefix)

    def _stage_parts(self, stage: int) -> Iterable[nn.Module]:
        if stage < 0:
            return [self.patch_embed]
        norm = getattr(self, f'norm{stage}', None)
        return [self.stages[stage]] + ([norm] if norm is not None else [])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images of any size -> NCHW feature maps of the
        ``out_indices`` stages (strides 4, 8, 16, 32, rounded up)."""
        if x.dim() != 4:
            raise ValueError('expected a (B, C, H, W) image batch, got shape '
                             f'{tuple(x.shape)}')
        x, hw = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw = stage(x, hw)
            if i in self.out_indices:
                outs.append(tokens_to_nchw(getattr(self, f'norm{i}')(x), hw))
        return tuple(outs)


def _official_init(module: nn.Module) -> None:
    """Official Swin init: Linear trunc_normal(0.02) / zero bias, LayerNorm
    (1, 0); convs keep PyTorch's default, relative-bias tables
    trunc_normal(0.02), ``scale`` / ``positional_encoding`` zeros."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------ checkpoint layout
_BUFFERS = re.compile(r'(relative_position_index|attn_mask)$')


def convert_flatten_swin_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official ``FLattenSwinTransformer`` weights -> mmpretrain
    ``ImageClassifier`` keys (``backbone.*`` with ``norm3`` as the final
    norm, ``head.fc.*``).

    ``layers.i.downsample`` becomes ``stages.{i+1}.downsample`` (merging
    opens the next stage); the ``relative_position_index`` and
    ``attn_mask`` buffers are dropped (rebuilt by the model). Raises
    ``KeyError`` naming any key outside the official layout.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if _BUFFERS.search(key):
            continue
        match = re.match(r'layers\.(\d)\.(blocks|downsample)\.', key)
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.'):
            converted['backbone.norm3.' + key[len('norm.'):]] = value
        elif key.startswith('patch_embed.'):
            converted['backbone.' + key] = value
        elif match:
            stage = int(match.group(1)) + (match.group(2) == 'downsample')
            converted[f'backbone.stages.{stage}.{match.group(2)}.'
                      f'{key[match.end():]}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f'not FLatten-Swin official keys: {unknown[:8]}')
    return converted


def flatten_swin_to_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`convert_flatten_swin_official` (``backbone.*`` with
    ``norm3`` and optional ``head.fc.*`` -> official keys, without the
    ``relative_position_index`` / ``attn_mask`` buffers)."""
    official = {}
    for key, value in state_dict.items():
        match = re.match(r'backbone\.stages\.(\d)\.(blocks|downsample)\.', key)
        if key.startswith('head.fc.'):
            official['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            official['norm.' + key[len('backbone.norm3.'):]] = value
        elif key.startswith('backbone.patch_embed.'):
            official[key[len('backbone.'):]] = value
        elif match:
            stage = int(match.group(1)) - (match.group(2) == 'downsample')
            official[f'layers.{stage}.{match.group(2)}.'
                     f'{key[match.end():]}'] = value
        else:
            raise KeyError(f'unexpected key {key!r}')
    return official
