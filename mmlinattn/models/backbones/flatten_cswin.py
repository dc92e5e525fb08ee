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
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from mmlinattn.registry import register_model
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Stage,
                     drop_path_schedule, flatten_attn_cfgs,
                     init_linear_and_norm)


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
            :func:`~mmlinattn.models.utils.parse_attn_type`); ``'LLSS'`` in
            every released model. Linear blocks are always global.
        mlp_ratio, qkv_bias: as CSWin.
        focusing_factor: focusing power p (3).
        kernel_size: DWC kernel of the linear attention (5).
        fp32_attention: see :class:`FocusedLinearAttention`.
        attn_cfg: any registered attention instead of ``attn_type``'s: one
            config for every block or one per stage. Host facts: the stage
            ``grid``, ``split_size``, ``global_window``, ``qkv_bias``,
            ``attn_drop``.
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
    # layout before the stage contract: patch embeddings inside the stages,
    # qkv / proj in the block instead of its attention
    key_migrations = (
        (r'^stages\.0\.patch_embed\.', 'patch_embed.'),
        (r'^stages\.(\d)\.patch_embed\.', r'stages.\1.downsample.'),
        (r'^(stages\.\d\.blocks\.\d+\.)(qkv|proj)\.', r'\1attn.\2.'),
    )

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
        split_size = list(split_size or arch.get('split_size', [1, 2, 7, 7]))
        self.check_per_stage(
            1, depths=depths, num_heads=num_heads, split_size=split_size)
        self.in_channels = in_channels
        self.pretrain_img_size = int(
            pretrain_img_size or arch.get('pretrain_img_size', 224))
        self.split_size = split_size
        self.attn_type = attn_type
        attn_cfgs = flatten_attn_cfgs(
            attn_cfg,
            attn_type,
            depths,
            dict(type='CSWinAttention'),
            qkv_layout='qkv',
            lepe=True,
            focusing_factor=focusing_factor,
            kernel_size=kernel_size,
            fp32_attention=fp32_attention)
        self.embed_dims = [arch['embed_dims'] * 2**i for i in range(4)]
        self.num_features = self.embed_dims

        self.patch_embed = ConvPatchEmbed(in_channels, self.embed_dims[0], 7,
                                          4, 2)
        rates = drop_path_schedule(drop_path_rate, depths)
        grid = (self.pretrain_img_size + 2 * 2 - 7) // 4 + 1
        stages = []
        for i, (dims, heads) in enumerate(zip(self.embed_dims, num_heads)):
            downsample = None
            if i > 0:
                downsample = ConvPatchEmbed(self.embed_dims[i - 1], dims, 3, 2,
                                            1)
                grid = (grid - 1) // 2 + 1
            blocks = self.make_blocks(
                dims,
                heads,
                attn_cfgs[i],
                rates[i],
                dict(
                    grid=(grid, grid),
                    split_size=split_size[i],
                    global_window=(i == self.num_stages - 1
                                   or split_size[i] == grid),
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate),
                mlp_ratio=mlp_ratio,
                drop_rate=drop_rate,
                with_cp=with_cp)
            stages.append(Stage(blocks, downsample))
        self.stages = nn.ModuleList(stages)
        self.add_output_norms(self.embed_dims)
        self.apply(init_linear_and_norm)


# ------------------------------------------------------ checkpoint layout
_STEM = {'stage1_conv_embed.0.': 'proj.', 'stage1_conv_embed.2.': 'norm.'}


def convert_flatten_cswin_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official FLatten ``CSWinTransformer`` weights -> mmpretrain
    ``ImageClassifier`` keys (``backbone.*`` with ``norm3`` as the final
    norm, ``head.fc.*``).

    ``stage{s}.j`` -> ``stages.{s-1}.blocks.j``; the stem becomes
    ``patch_embed`` and ``merge{i}`` ``stages.{i}.downsample``; the block's
    ``qkv`` / ``proj`` move into ``attn``; ``attns.0`` of a linear block ->
    ``attn`` (``get_v`` -> ``lepe``); ``attns.{b}.get_v`` of a softmax
    block -> ``attn.lepe.{b}``. Raises ``KeyError`` naming any key outside
    the official layout.
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
            converted['backbone.patch_embed.' + name +
                      key[len('stage1_conv_embed.0.'):]] = value
        elif merge:
            name = 'proj' if merge.group(2) == 'conv' else 'norm'
            converted[f'backbone.stages.{merge.group(1)}.downsample.{name}.'
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
            elif rest.startswith(('qkv.', 'proj.')):
                rest = 'attn.' + rest
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
        embed = re.match(
            r'backbone\.(?:stages\.(\d)\.downsample|patch_embed)\.'
            r'(proj|norm)\.', key)
        if key.startswith('head.fc.'):
            official['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            official['norm.' + key[len('backbone.norm3.'):]] = value
        elif embed and embed.group(1) is None:
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
            elif rest.startswith(('attn.qkv.', 'attn.proj.')):
                rest = rest[len('attn.'):]
            elif rest.startswith('attn.'):
                rest = 'attns.0.' + rest[len('attn.'):].replace(
                    'lepe.', 'get_v.')
            official[f'stage{int(block.group(1)) + 1}.{block.group(2)}.'
                     f'{rest}'] = value
        else:
            raise KeyError(f'unexpected key {key!r}')
    return official
