# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLatten-PVT and FLatten-PVTv2: PVT / PVTv2 with focused linear attention.

Han, Pan, Han, Song, Huang: "FLatten Transformer: Vision Transformer using
Focused Linear Attention", ICCV 2023 (https://arxiv.org/abs/2308.00442,
official code https://github.com/LeapLabTHU/FLatten-Transformer), applied to
PVT (Wang et al., ICCV 2021) and PVTv2 (Wang et al., CVMJ 2022).

Both share one block and one stage module; they differ in the patch
embedding (non-overlapping 4/2 vs overlapping 7/4, 3/2), the absolute
``pos_embed`` (PVT only), the ConvFFN and the stage norm (PVTv2 only).
Every attention layer except the module path keeps the official parameter
names, so :func:`convert_flatten_pvt_official` only renames containers.
"""
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.init import trunc_normal_

from mmlinattn.registry import register_model
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Stage,
                     drop_path_schedule, init_conv_fan_out,
                     init_linear_and_norm, per_block_attn_cfgs)

Grid = Tuple[int, int]


def _parse_per_stage(name: str, value, allowed: str) -> str:
    if (not isinstance(value, str) or len(value) != 4
            or set(value) - set(allowed)):
        raise ValueError(f'{name} must be 4 characters from {allowed!r} '
                         f'(one per stage), got {value!r}')
    return value


class _FLattenPVTBase(LinAttnBackbone):
    """Shared constructor of :class:`FLattenPVT` and :class:`FLattenPVTv2`;
    subclasses set the stem/stage layout flags."""
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios')
    overlapping_patch_embed: bool
    use_pos_embed: bool
    conv_ffn: bool
    stage_norm: bool
    conv_fan_out_init: bool  # PVTv2 inits every conv fan-out normal
    # layout before the stage contract: the first patch embedding was
    # stages.0.patch_embed, the others stages.i.patch_embed
    key_migrations = ((r'^stages\.0\.patch_embed\.', 'patch_embed.'),
                      (r'^stages\.(\d)\.patch_embed\.',
                       r'stages.\1.downsample.'))

    def __init__(self,
                 arch='tiny',
                 in_channels: int = 3,
                 pretrain_img_size=224,
                 attn_type: str = 'LLLL',
                 la_sr_ratios: Sequence[int] = (1, 1, 1, 1),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 focusing_factor: float = 3.,
                 kernel_size: int = 5,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 fp32_attention: bool = True,
                 attn_cfg: Union[None, dict, Sequence[dict]] = None,
                 out_indices=(3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg=None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        arch = self.resolve_arch(arch)
        self.check_per_stage(**{k: arch[k] for k in self.essential_keys})
        self.in_channels = in_channels
        self.embed_dims = list(arch['embed_dims'])
        self.depths = list(arch['depths'])
        self.attn_type = _parse_per_stage('attn_type', attn_type, 'LS')
        self.check_per_stage(1, la_sr_ratios=la_sr_ratios, sr_ratios=sr_ratios)
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        self.pretrain_img_size = tuple(pretrain_img_size)
        self.attn_cfgs = per_block_attn_cfgs(attn_cfg, [
            dict(
                type='FocusedLinearAttention',
                qkv_layout='q_kv',
                sr_ratio=int(la_sr_ratios[i]),
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
                fp32_attention=fp32_attention) if kind == 'L' else dict(
                    type='SpatialReductionAttention')
            for i, kind in enumerate(self.attn_type)
        ], self.depths)

        self.patch_embed = self._make_patch_embed(
            in_channels, self.embed_dims[0], first=True)
        rates = drop_path_schedule(drop_path_rate, self.depths)
        stages = []
        grid = self.pretrain_img_size
        for i in range(self.num_stages):
            downsample = None if i == 0 else self._make_patch_embed(
                self.embed_dims[i - 1], self.embed_dims[i], first=False)
            stride = 4 if i == 0 else 2  # both embeddings round up
            grid = (-(-grid[0] // stride), -(-grid[1] // stride))
            blocks = self.make_blocks(
                self.embed_dims[i],
                arch['num_heads'][i],
                self.attn_cfgs[i],
                rates[i],
                dict(
                    grid=grid,
                    sr_ratio=int(sr_ratios[i]),
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate),
                mlp_ratio=arch['mlp_ratios'][i],
                conv_ffn=self.conv_ffn,
                drop_rate=drop_rate,
                norm_eps=1e-6,
                with_cp=with_cp)
            stages.append(
                Stage(
                    blocks,
                    downsample,
                    self.embed_dims[i],
                    pos_embed_grid=grid if self.use_pos_embed else None,
                    drop_rate=drop_rate,
                    norm=1e-6 if self.stage_norm else None))
        self.stages = nn.ModuleList(stages)
        self.apply(init_linear_and_norm)
        if self.conv_fan_out_init:
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    init_conv_fan_out(module)
        for stage in self.stages:
            if stage.pos_embed is not None:
                trunc_normal_(stage.pos_embed, std=.02)

    def _make_patch_embed(self, in_channels: int, embed_dims: int,
                          first: bool) -> ConvPatchEmbed:
        if self.overlapping_patch_embed:
            kernel, stride = (7, 4) if first else (3, 2)
            return ConvPatchEmbed(
                in_channels, embed_dims, kernel, stride, padding=kernel // 2)
        stride = 4 if first else 2
        return ConvPatchEmbed(
            in_channels, embed_dims, stride, stride, pad_to_stride=True)


_PVT_DIMS = dict(
    embed_dims=[64, 128, 320, 512],
    num_heads=[1, 2, 5, 8],
    mlp_ratios=[8, 8, 4, 4])


@register_model()
class FLattenPVT(_FLattenPVTBase):
    """FLatten-PVT backbone (PVT v1 with focused linear attention).

    Released models use linear attention in every stage (``attn_type``
    ``'LLLL'``) over all tokens (``la_sr_ratios`` 1): global attention with
    no spatial reduction. Like the official model there is no final norm
    (classification averages the raw stage-4 tokens).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'medium'``, ``'large'`` (README
            "FLatten-PVT-B"; aliases ``t s m l b``) or a dict with
            ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``.
        in_channels: input image channels.
        pretrain_img_size: image size of the pretraining: ``pos_embed`` and
            ``positional_encoding`` are learnt on its stage grids and
            resized at run time for other input sizes.
        attn_type: per stage, ``'L'`` focused linear attention or ``'S'``
            PVT softmax spatial-reduction attention.
        la_sr_ratios: spatial reduction of the ``'L'`` stages.
        sr_ratios: spatial reduction of the ``'S'`` stages.
        focusing_factor: focusing power p (3).
        kernel_size: DWC kernel of the linear attention (5).
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate: as PVT.
        fp32_attention: see :class:`FocusedLinearAttention`.
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see
            :class:`LinAttnBackbone`.
        with_cp: activation checkpointing in every block.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(depths=[2, 2, 2, 2], **_PVT_DIMS)),
        **dict.fromkeys(['s', 'small'],
                        dict(depths=[3, 4, 6, 3], **_PVT_DIMS)),
        **dict.fromkeys(['m', 'medium'],
                        dict(depths=[3, 4, 18, 3], **_PVT_DIMS)),
        **dict.fromkeys(['l', 'large', 'b'],
                        dict(depths=[3, 8, 27, 3], **_PVT_DIMS)),
    }  # yapf: disable
    overlapping_patch_embed = False
    use_pos_embed = True
    conv_ffn = False
    stage_norm = False
    conv_fan_out_init = False


@register_model()
class FLattenPVTv2(_FLattenPVTBase):
    """FLatten-PVTv2 backbone (PVTv2 with focused linear attention).

    Overlapping patch embeddings, ConvFFN and a LayerNorm closing every
    stage, no absolute position embedding; linear attention in every stage
    over all tokens in the released models.

    Args:
        arch: ``'b0'`` ... ``'b5'`` (b5 has no official config or weights)
            or a dict with ``embed_dims``, ``depths``, ``num_heads``,
            ``mlp_ratios``.
        Others: as :class:`FLattenPVT`.
    """
    arch_zoo = {
        'b0':
        dict(
            embed_dims=[32, 64, 160, 256],
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 5, 8],
            mlp_ratios=[8, 8, 4, 4]),
        'b1':
        dict(depths=[2, 2, 2, 2], **_PVT_DIMS),
        'b2':
        dict(depths=[3, 4, 6, 3], **_PVT_DIMS),
        'b3':
        dict(depths=[3, 4, 18, 3], **_PVT_DIMS),
        'b4':
        dict(depths=[3, 8, 27, 3], **_PVT_DIMS),
        'b5':
        dict(
            embed_dims=[64, 128, 320, 512],
            depths=[3, 6, 40, 3],
            num_heads=[1, 2, 5, 8],
            mlp_ratios=[4, 4, 4, 4]),
    }
    overlapping_patch_embed = True
    use_pos_embed = False
    conv_ffn = True
    stage_norm = True
    conv_fan_out_init = True

    def __init__(self, arch='b0', **kwargs):
        super().__init__(arch=arch, **kwargs)


# ------------------------------------------------------ checkpoint layout
_OFFICIAL_TO_OURS = [
    (re.compile(r'^patch_embed(1)\.'), 'patch_embed.'),
    (re.compile(r'^patch_embed(\d)\.'), 'stages.{}.downsample.'),
    (re.compile(r'^pos_embed(\d)$'), 'stages.{}.pos_embed'),
    (re.compile(r'^block(\d)\.'), 'stages.{}.blocks.'),
    (re.compile(r'^norm(\d)\.'), 'stages.{}.norm.'),
]
_OURS_TO_OFFICIAL = [
    (re.compile(r'^patch_embed()\.'), 'patch_embed1.'),
    (re.compile(r'^stages\.(\d)\.downsample\.'), 'patch_embed{}.'),
    (re.compile(r'^stages\.(\d)\.pos_embed$'), 'pos_embed{}'),
    (re.compile(r'^stages\.(\d)\.blocks\.'), 'block{}.'),
    (re.compile(r'^stages\.(\d)\.norm\.'), 'norm{}.'),
]


def _rename(key: str, rules, offset: int) -> Optional[str]:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            index = match.group(1)
            return (template.format(int(index) + offset if index else '') +
                    key[match.end():])
    return None


def convert_flatten_pvt_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official FLatten-PVT / FLatten-PVTv2 classifier weights -> mmpretrain
    ``ImageClassifier`` keys (``backbone.*`` and ``head.fc.*``).

    PVT v1's final ``norm.*`` is unused by the official forward and dropped.
    Raises ``KeyError`` naming any key outside the official layout.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.'):
            continue
        else:
            new_key = _rename(key, _OFFICIAL_TO_OURS, offset=-1)
            if new_key is None:
                unknown.append(key)
            else:
                converted['backbone.' + new_key] = value
    if unknown:
        raise KeyError(f'not FLatten-PVT/PVTv2 official keys: {unknown[:8]}')
    return converted


def flatten_pvt_to_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`convert_flatten_pvt_official` (``backbone.*`` and
    optional ``head.fc.*`` -> official keys). For PVT v1 an identity final
    ``norm`` is added so the official model loads strictly."""
    official = {}
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            official['head.' + key[len('head.fc.'):]] = value
            continue
        if not key.startswith('backbone.'):
            raise KeyError(f'unexpected key {key!r}')
        new_key = _rename(key[len('backbone.'):], _OURS_TO_OFFICIAL, offset=1)
        if new_key is None:
            raise KeyError(f'unexpected key {key!r}')
        official[new_key] = value
    if 'pos_embed4' in official:  # PVT v1: the unused final norm
        dims = official['pos_embed4'].shape[-1]
        official['norm.weight'] = torch.ones(dims)
        official['norm.bias'] = torch.zeros(dims)
    return official
