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
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.registry import register_model
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Linear, Stage,
                     drop_path_schedule, flatten_attn_cfgs,
                     init_linear_and_norm)

Grid = Tuple[int, int]


class SwinPatchMerging(nn.Module):
    """2 x 2 neighbourhood concat -> LayerNorm(4C) -> Linear(4C, 2C).

    Concatenation order (0,0), (1,0), (0,1), (1,1) as the official Swin /
    FLatten code (no weight permutation needed, unlike ``nn.Unfold``-based
    merging); odd maps are zero-padded at the bottom / right.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        B, N, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C)
        # always pads while exporting (a zero-width pad is a no-op): no
        # branch on the traced size
        if torch.onnx.is_in_onnx_export() or H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, i::2, j::2] for j in (0, 1) for i in (0, 1)], -1)
        hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.view(B, -1, 4 * C))), hw


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
            :func:`~mmlinattn.models.utils.parse_attn_type`); ``'LLSS'`` in
            every released model.
        mlp_ratio, qkv_bias: as Swin.
        focusing_factor: focusing power p (3).
        kernel_size: DWC kernel of the linear attention (5).
        fp32_attention: see :class:`FocusedLinearAttention`.
        attn_cfg: any registered attention instead of ``attn_type``'s: one
            config for every block or one per stage. Host facts: the stage
            ``grid``, ``window_size``, ``shift`` (odd blocks), ``qkv_bias``,
            ``attn_drop``.
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
                 attn_cfg: Union[None, dict, Sequence[dict]] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 out_indices=(3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        arch = self.resolve_arch(arch)
        depths, num_heads = list(arch['depths']), list(arch['num_heads'])
        self.check_per_stage(1, depths=depths, num_heads=num_heads)
        self.in_channels = in_channels
        self.pretrain_img_size = int(
            pretrain_img_size or arch.get('pretrain_img_size', 224))
        self.window_size = int(window_size or arch.get('window_size', 7))
        if self.window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        self.attn_type = attn_type
        attn_cfgs = flatten_attn_cfgs(
            attn_cfg,
            attn_type,
            depths,
            dict(type='WindowAttention'),
            qkv_layout='qkv',
            focusing_factor=focusing_factor,
            kernel_size=kernel_size,
            fp32_attention=fp32_attention)
        self.embed_dims = [arch['embed_dims'] * 2**i for i in range(4)]
        self.num_features = self.embed_dims

        self.patch_embed = ConvPatchEmbed(
            in_channels,
            self.embed_dims[0],
            patch_size,
            patch_size,
            pad_to_stride=True)
        rates = drop_path_schedule(drop_path_rate, depths)
        grid = -(-self.pretrain_img_size // patch_size)
        stages = []
        for i, (dims, heads) in enumerate(zip(self.embed_dims, num_heads)):
            downsample = None
            if i > 0:
                downsample = SwinPatchMerging(self.embed_dims[i - 1], dims)
                grid = -(-grid // 2)
            blocks = self.make_blocks(
                dims,
                heads,
                attn_cfgs[i],
                rates[i],
                dict(
                    grid=(grid, grid),
                    window_size=self.window_size,
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate),
                block_facts=[dict(shift=j % 2 == 1) for j in range(depths[i])],
                mlp_ratio=mlp_ratio,
                drop_rate=drop_rate,
                with_cp=with_cp)
            stages.append(
                Stage(
                    blocks, downsample, drop_rate=drop_rate if i == 0 else 0))
        self.stages = nn.ModuleList(stages)
        self.add_output_norms(self.embed_dims)
        self.apply(init_linear_and_norm)


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
