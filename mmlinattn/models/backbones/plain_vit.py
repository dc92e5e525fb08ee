# Copyright (c) mmlinattn contributors. All rights reserved.
"""A plain isotropic ViT / DeiT host for any registered attention.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Touvron et
al., "Training data-efficient image transformers & distillation through
attention" (DeiT), ICML 2021. FLatten and SOFT both report DeiT-style
variants; here the attention of every block is a config, so the same
skeleton compares softmax, focused linear, SOFT, HiLo, XNorm or elu + 1
linear attention.
"""
from typing import List, Optional, Sequence, Union

import torch.nn as nn
from torch.nn.init import trunc_normal_

from mmlinattn.registry import register_model
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Stage,
                     drop_path_schedule, init_linear_and_norm,
                     per_block_attn_cfgs)


@register_model()
class PlainViT(LinAttnBackbone):
    """Isotropic ViT / DeiT: a ``patch_size`` conv patch embedding, a
    learnt position embedding (resized bicubically for other inputs), and
    ``depth`` pre-norm blocks split into four stages of equal depth. Every
    output is ``norm{i}`` of a stage's tokens as an NCHW map at stride
    ``patch_size``; classifiers average-pool output 3 (no class token, so
    grid-based attentions apply unchanged).

    Args:
        arch: ``'deit-tiny'``, ``'deit-small'``, ``'deit-base'`` (aliases
            ``t s b``) or a dict with ``embed_dims``, ``depth``,
            ``num_heads``.
        in_channels: image channels.
        img_size: pretraining size (fixes the position-embedding grid).
        patch_size: patch embedding stride.
        attn_cfg: the attention, one config for every block or one per
            stage; ``None``: global softmax attention (DeiT). Host facts: the
            token ``grid`` at ``img_size``, ``qkv_bias``, ``attn_drop``.
        mlp_ratio, qkv_bias: as DeiT.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, softmax
            dropout, stochastic depth (linear over all blocks).
        out_indices, frozen_stages, norm_eval, pretrained, init_cfg: see
            :class:`LinAttnBackbone`.
        with_cp: activation checkpointing in every block.
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'deit-tiny'],
                        dict(embed_dims=192, depth=12, num_heads=3)),
        **dict.fromkeys(['s', 'deit-small'],
                        dict(embed_dims=384, depth=12, num_heads=6)),
        **dict.fromkeys(['b', 'deit-base'],
                        dict(embed_dims=768, depth=12, num_heads=12)),
    }  # yapf: disable
    essential_keys = ('embed_dims', 'depth', 'num_heads')

    def __init__(self,
                 arch: Union[str, dict] = 'deit-small',
                 in_channels: int = 3,
                 img_size: int = 224,
                 patch_size: int = 16,
                 attn_cfg: Union[None, dict, Sequence[dict]] = None,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        arch = self.resolve_arch(arch)
        dims, depth = arch['embed_dims'], arch['depth']
        if depth < self.num_stages:
            raise ValueError(f'depth {depth} < {self.num_stages}: every '
                             'stage needs at least one block')
        depths = [
            depth * (i + 1) // self.num_stages - depth * i // self.num_stages
            for i in range(self.num_stages)
        ]
        self.in_channels = in_channels
        self.embed_dims = dims
        grid = (-(-img_size // patch_size), ) * 2
        self.patch_embed = ConvPatchEmbed(
            in_channels,
            dims,
            patch_size,
            patch_size,
            norm=False,
            pad_to_stride=True)
        attn_cfgs = per_block_attn_cfgs(
            attn_cfg, [dict(type='SpatialReductionAttention')] * 4, depths)
        rates = drop_path_schedule(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            Stage(
                self.make_blocks(
                    dims,
                    arch['num_heads'],
                    attn_cfgs[i],
                    rates[i],
                    dict(
                        grid=grid, qkv_bias=qkv_bias,
                        attn_drop=attn_drop_rate),
                    mlp_ratio=mlp_ratio,
                    drop_rate=drop_rate,
                    norm_eps=1e-6,
                    with_cp=with_cp),
                embed_dims=dims,
                pos_embed_grid=grid if i == 0 else None,
                pos_interp_mode='bicubic',
                drop_rate=drop_rate if i == 0 else 0.)
            for i in range(self.num_stages))
        self.add_output_norms([dims] * self.num_stages, eps=1e-6)
        self.apply(init_linear_and_norm)
        trunc_normal_(self.stages[0].pos_embed, std=.02)
