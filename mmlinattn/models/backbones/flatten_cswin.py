# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLatten-CSwin: CSWin Transformer with focused linear attention.

Han, Pan, Han, Song, Huang: "FLatten Transformer: Vision Transformer using
Focused Linear Attention", ICCV 2023 (https://arxiv.org/abs/2308.00442,
official code https://github.com/LeapLabTHU/FLatten-Transformer), applied to
CSWin Transformer (Dong et al., CVPR 2022).

Every block projects ``qkv`` and ``proj`` itself (CSWin layout). Blocks of
the ``'L'`` stages (stages 1-2 of the released models) run one global
:class:`FocusedLinearAttention` branch with all heads and add CSWin's
locally-enhanced positional encoding (LePE, a 3 x 3 depthwise conv on V):
``attn + DWC5x5(V) + LePE3x3(V)``. Blocks of the ``'S'`` stages are plain
CSWin: softmax attention in vertical and horizontal stripes of width
``split_size`` (two branches of half the channels and heads), or one global
branch in the last stage. For dense prediction stripes are padded
bottom / right with zeros and padded keys are masked; linear blocks stay
global. Parameter names follow the official checkpoints except ``get_v``
(here ``lepe``) and the container paths
(:func:`convert_flatten_cswin_official`).
"""
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from mmlinattn.registry import register_model
from ..attention.focused_linear_attention import FocusedLinearAttention
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Mlp, build_drop_path,
                     checkpoint_call, tokens_to_nchw)
from .flatten_swin import (parse_attn_type, resize_grid_params,
                           window_partition, window_reverse)

Grid = Tuple[int, int]


def _to_image(x: torch.Tensor, hw: Grid) -> torch.Tensor:
    """(B, H*W, C) -> (B, H, W, C)."""
    return x.view(x.shape[0], hw[0], hw[1], x.shape[-1])


class LePEFocusedLinearAttention(FocusedLinearAttention):
    """Global focused linear attention plus LePE: the ``'L'`` blocks of
    FLatten-CSwin. The block projects q, k, v and applies ``proj``."""

    def __init__(self, embed_dims: int, num_heads: int, key_grid: Grid,
                 **kwargs):
        super().__init__(
            embed_dims,
            num_heads,
            key_grid=key_grid,
            qkv_layout=None,
            **kwargs)
        self.lepe = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1, groups=embed_dims)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                hw: Grid) -> torch.Tensor:
        """q, k, v (B, H*W, C) on grid ``hw`` -> (B, H*W, C)."""
        lepe = self.lepe(_to_image(v, hw).permute(0, 3, 1, 2))
        return self.attend(q, k, v, hw) + lepe.flatten(2).transpose(1, 2)


class CSWinStripeAttention(nn.Module):
    """CSWin's cross-shaped window softmax attention with LePE.

    Two branches of ``C / 2`` channels and ``h / 2`` heads attend within
    vertical (full height x ``split_size``) and horizontal (``split_size``
    x full width) stripes, or, with ``global_window``, one branch of all
    channels and heads attends over the whole map (CSWin's last stage).
    LePE (``lepe.{branch}``, 3 x 3 depthwise) is applied to V inside each
    stripe, as upstream. The scale is ``head_dim ** -0.5``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 split_size: int,
                 global_window: bool = False,
                 attn_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible '
                             f'by num_heads ({num_heads})')
        branches = 1 if global_window else 2
        if not global_window and num_heads % 2:
            raise ValueError('stripe attention splits the heads in two '
                             f'branches; num_heads={num_heads} is odd')
        self.num_heads = num_heads
        self.split_size = split_size
        self.global_window = global_window
        self.attn_drop = attn_drop
        dims = embed_dims // branches
        self.lepe = nn.ModuleList([
            nn.Conv2d(dims, dims, 3, padding=1, groups=dims)
            for _ in range(branches)
        ])

    def _stripes(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 hw: Grid, window: Grid, lepe: nn.Module,
                 num_heads: int) -> torch.Tensor:
        """Attention of one branch inside ``window``-shaped stripes."""
        B, N, C = q.shape
        H, W = hw
        wh, ww = window
        pad_b, pad_r = (-H) % wh, (-W) % ww
        padded_hw = (H + pad_b, W + pad_r)
        q, k, v = (
            F.pad(_to_image(t, hw), (0, 0, 0, pad_r, 0, pad_b))
            for t in (q, k, v))
        q, k, v = (window_partition(t, window) for t in (q, k, v))
        B_, n, _ = q.shape
        positional = lepe(v.transpose(1, 2).reshape(B_, C, wh, ww))
        positional = positional.flatten(2).transpose(1, 2)
        d = C // num_heads
        q, k, v = (
            t.view(B_, n, num_heads, d).transpose(1, 2) for t in (q, k, v))
        mask = None
        if pad_b or pad_r:  # hide padded keys from real queries
            valid = torch.zeros(1, *padded_hw, 1, device=q.device)
            valid[:, :H, :W] = 1
            valid = window_partition(valid, window).view(-1, 1, 1, n) > 0
            q, k, v = (t.view(B, -1, num_heads, n, d) for t in (q, k, v))
            mask = valid
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.)
        x = x.reshape(B_, num_heads, n, d).transpose(1, 2).reshape(B_, n, C)
        x = window_reverse(x + positional, window, padded_hw)
        return x[:, :H, :W].reshape(B, N, C)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                hw: Grid) -> torch.Tensor:
        """q, k, v (B, H*W, C) on grid ``hw`` -> (B, H*W, C)."""
        H, W = hw
        if self.global_window:
            return self._stripes(q, k, v, hw, (H, W), self.lepe[0],
                                 self.num_heads)
        C, s, h = q.shape[-1] // 2, self.split_size, self.num_heads // 2
        vertical = self._stripes(q[..., :C], k[..., :C], v[..., :C], hw,
                                 (H, s), self.lepe[0], h)
        horizontal = self._stripes(q[..., C:], k[..., C:], v[..., C:], hw,
                                   (s, W), self.lepe[1], h)
        return torch.cat([vertical, horizontal], dim=-1)


class FLattenCSWinBlock(nn.Module):
    """CSWin block: ``x + proj(attn(qkv(norm1(x))))``, then the MLP.

    Args:
        embed_dims, num_heads, mlp_ratio, qkv_bias: as CSWin.
        attn_type: ``'L'`` (global focused linear attention + LePE) or
            ``'S'`` (stripe softmax attention).
        split_size: stripe width (``'S'``).
        global_window: one global softmax branch (``'S'`` in the last
            stage, or where the stripe covers the whole pretraining map).
        key_grid: pretraining token grid of the stage (``'L'``).
        focusing_factor, kernel_size, fp32_attention: see
            :class:`FocusedLinearAttention`.
        drop_rate, attn_drop_rate, drop_path_rate: MLP dropout, softmax
            attention dropout, stochastic depth.
        with_cp: activation checkpointing.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_type: str = 'L',
                 split_size: int = 7,
                 global_window: bool = False,
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
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        if attn_type == 'L':
            self.attn = LePEFocusedLinearAttention(
                embed_dims,
                num_heads,
                key_grid,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
                fp32_attention=fp32_attention)
        else:
            self.attn = CSWinStripeAttention(
                embed_dims,
                num_heads,
                split_size,
                global_window=global_window,
                attn_drop=attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.drop_path = build_drop_path(drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)

    def _forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.drop_path(self.proj(self.attn(q, k, v, hw)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        """(B, H*W, C) tokens on grid ``hw`` -> (B, H*W, C)."""
        return checkpoint_call(self._forward, x, hw, enabled=self.with_cp)


class FLattenCSWinStage(nn.Module):
    """Conv patch embedding (stem: 7 x 7 / 4; merges: 3 x 3 / 2) + LN, then
    the blocks."""

    def __init__(self, patch_embed: ConvPatchEmbed, blocks: List[nn.Module]):
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid]:
        """(B, C_in, H_in, W_in) -> tokens (B, H*W, C) and (H, W)."""
        x, hw = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, hw)
        return x, hw


@register_model()
class FLattenCSWin(LinAttnBackbone):
    """FLatten-CSwin backbone (CSWin Transformer with focused linear
    attention in the ``'L'`` stages).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'base-384'`` (aliases
            ``t s b b-384``) or a dict with ``embed_dims``, ``depths``,
            ``num_heads`` (and optionally ``pretrain_img_size``,
            ``split_size``).
        in_channels: input image channels.
        pretrain_img_size: training image size (224; 384 for
            ``base-384``): fixes the grids the ``positional_encoding`` of
            the linear blocks is learnt on (resized bicubic at run time for
            other maps) and which softmax stages are global.
        split_size: stripe width of the softmax stages, per stage
            (``[1, 2, 7, 7]``; ``[1, 2, 12, 12]`` for ``base-384``). A stage
            whose stripe covers its whole pretraining map, and always the
            last stage, attends globally.
        attn_type: per stage ``L`` / ``S`` / ``M`` (see
            :func:`~.flatten_swin.parse_attn_type`); ``'LLSS'`` in every
            released model. Linear blocks are always global.
        mlp_ratio, qkv_bias: as CSWin.
        focusing_factor: focusing power p (3).
        kernel_size: DWC kernel of the linear attention (5).
        fp32_attention: see :class:`FocusedLinearAttention`.
        drop_rate, attn_drop_rate, drop_path_rate: MLP dropout, softmax
            attention dropout, stochastic depth (linear over all blocks).
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see
            :class:`LinAttnBackbone`; a LayerNorm ``norm{i}`` is created for
            every output stage (``norm3`` is the official final ``norm``).
        with_cp: activation checkpointing in every block.
    """
    _base = dict(embed_dims=96, depths=[3, 6, 29, 2], num_heads=[4, 8, 16, 32])
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'],
                        dict(embed_dims=64, depths=[2, 4, 18, 1],
                             num_heads=[2, 4, 8, 16])),
        **dict.fromkeys(['s', 'small'],
                        dict(embed_dims=64, depths=[2, 4, 32, 2],
                             num_heads=[2, 4, 8, 16])),
        **dict.fromkeys(['b', 'base'], _base),
        **dict.fromkeys(['b-384', 'base-384'],
                        dict(pretrain_img_size=384, split_size=[1, 2, 12, 12],
                             **_base)),
    }  # yapf: disable
    essential_keys = ('embed_dims', 'depths', 'num_heads')

    def __init__(self,
                 arch='tiny',
                 in_channels: int = 3,
                 pretrain_img_size: Optional[int] = None,
                 split_size: Optional[Sequence[int]] = None,
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
        split_size = list(split_size or arch.get('split_size', [1, 2, 7, 7]))
        for name, value in (('depths', depths), ('num_heads', num_heads),
                            ('split_size', split_size)):
            if len(value) != self.num_stages or min(value) < 1:
                raise ValueError(f'{name} needs {self.num_stages} ints >= 1, '
                                 f'got {value!r}')
        self.pretrain_img_size = int(
            pretrain_img_size or arch.get('pretrain_img_size', 224))
        self.split_size = split_size
        self.attn_type = attn_type
        block_types = parse_attn_type(attn_type, depths)
        self.embed_dims = [arch['embed_dims'] * 2**i for i in range(4)]
        self.num_features = self.embed_dims

        dpr = [
            drop_path_rate * j / max(sum(depths) - 1, 1)
            for j in range(sum(depths))
        ]  # linear stochastic depth
        grid = self.pretrain_img_size
        stages = []
        for i, (dims, heads) in enumerate(zip(self.embed_dims, num_heads)):
            if i == 0:
                patch_embed = ConvPatchEmbed(in_channels, dims, 7, 4, 2)
                grid = (grid + 2 * 2 - 7) // 4 + 1
            else:
                patch_embed = ConvPatchEmbed(self.embed_dims[i - 1], dims, 3,
                                             2, 1)
                grid = (grid - 1) // 2 + 1
            global_window = i == self.num_stages - 1 or split_size[i] == grid
            blocks = [
                FLattenCSWinBlock(
                    dims,
                    heads,
                    attn_type=block_types[i][j],
                    split_size=split_size[i],
                    global_window=global_window,
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
            stages.append(FLattenCSWinStage(patch_embed, blocks))
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
            return [self.stages[0].patch_embed]
        norm = getattr(self, f'norm{stage}', None)
        return [self.stages[stage]] + ([norm] if norm is not None else [])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images of any size -> NCHW feature maps of the
        ``out_indices`` stages (strides 4, 8, 16, 32)."""
        if x.dim() != 4:
            raise ValueError('expected a (B, C, H, W) image batch, got shape '
                             f'{tuple(x.shape)}')
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw = stage(x)
            if i in self.out_indices:
                outs.append(tokens_to_nchw(getattr(self, f'norm{i}')(x), hw))
            if i < self.num_stages - 1:
                x = tokens_to_nchw(x, hw)
        return tuple(outs)


def _official_init(module: nn.Module) -> None:
    """Official CSWin init: Linear trunc_normal(0.02) / zero bias, LayerNorm
    (1, 0); convs keep PyTorch's default, ``scale`` /
    ``positional_encoding`` zeros."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------ checkpoint layout
_STEM = {'stage1_conv_embed.0.': 'proj.', 'stage1_conv_embed.2.': 'norm.'}


def convert_flatten_cswin_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official FLatten ``CSWinTransformer`` weights -> mmpretrain
    ``ImageClassifier`` keys (``backbone.*`` with ``norm3`` as the final
    norm, ``head.fc.*``).

    ``stage{s}.j`` -> ``stages.{s-1}.blocks.j``; the stem and
    ``merge{i}`` become ``stages.{i}.patch_embed``; ``attns.0`` of a linear
    block -> ``attn`` (``get_v`` -> ``lepe``); ``attns.{b}.get_v`` of a
    softmax block -> ``attn.lepe.{b}``. Raises ``KeyError`` naming any key
    outside the official layout.
    """
    state_dict = {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state_dict.items()
    }
    linear_blocks = {
        k[:-len('.attns.0.scale')]
        for k in state_dict if k.endswith('.attns.0.scale')
    }
    converted, unknown = {}, []
    for key, value in state_dict.items():
        block = re.match(r'(stage(\d)\.(\d+))\.', key)
        merge = re.match(r'merge(\d)\.(conv|norm)\.', key)
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.'):
            converted['backbone.norm3.' + key[len('norm.'):]] = value
        elif key[:len('stage1_conv_embed.0.')] in _STEM:
            name = _STEM[key[:len('stage1_conv_embed.0.')]]
            converted['backbone.stages.0.patch_embed.' + name +
                      key[len('stage1_conv_embed.0.'):]] = value
        elif merge:
            name = 'proj' if merge.group(2) == 'conv' else 'norm'
            converted[f'backbone.stages.{merge.group(1)}.patch_embed.{name}.'
                      f'{key[merge.end():]}'] = value
        elif block:
            rest = key[block.end():]
            attn = re.match(r'attns\.(\d)\.', rest)
            if attn and block.group(1) in linear_blocks:
                rest = 'attn.' + rest[attn.end():].replace('get_v.', 'lepe.')
            elif attn and rest[attn.end():].startswith('get_v.'):
                rest = (f'attn.lepe.{attn.group(1)}.' +
                        rest[attn.end() + len('get_v.'):])
            elif attn:
                unknown.append(key)
                continue
            converted[f'backbone.stages.{int(block.group(2)) - 1}.blocks.'
                      f'{block.group(3)}.{rest}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f'not FLatten-CSwin official keys: {unknown[:8]}')
    return converted


def flatten_cswin_to_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`convert_flatten_cswin_official`."""
    official = {}
    for key, value in state_dict.items():
        block = re.match(r'backbone\.stages\.(\d)\.blocks\.(\d+)\.', key)
        embed = re.match(r'backbone\.stages\.(\d)\.patch_embed\.(proj|norm)\.',
                         key)
        if key.startswith('head.fc.'):
            official['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            official['norm.' + key[len('backbone.norm3.'):]] = value
        elif embed and embed.group(1) == '0':
            index = '0' if embed.group(2) == 'proj' else '2'
            official[f'stage1_conv_embed.{index}.{key[embed.end():]}'] = value
        elif embed:
            name = 'conv' if embed.group(2) == 'proj' else 'norm'
            official[f'merge{embed.group(1)}.{name}.'
                     f'{key[embed.end():]}'] = value
        elif block:
            rest = key[block.end():]
            stripe = re.match(r'attn\.lepe\.(\d)\.', rest)
            if stripe:
                rest = f'attns.{stripe.group(1)}.get_v.{rest[stripe.end():]}'
            elif rest.startswith('attn.'):
                rest = 'attns.0.' + rest[len('attn.'):].replace(
                    'lepe.', 'get_v.')
            official[f'stage{int(block.group(1)) + 1}.{block.group(2)}.'
                     f'{rest}'] = value
        else:
            raise KeyError(f'unexpected key {key!r}')
    return official
