# Copyright (c) mmlinattn contributors. All rights reserved.
"""SOFT and SOFT-Norm backbones.

SOFT: Softmax-free Transformer with Linear Complexity (Lu et al., NeurIPS
2021, arXiv:2110.11945); SOFT-Norm: Softmax-free Linear Transformers (Lu et
al., IJCV 2024, arXiv:2207.03341). Official code: fudan-zvg/SOFT.

A four-stage pyramid: a conv stem (stride 4) and Conv-BN-ReLU downsampling,
learnable absolute position embeddings, post-LN softmax-free blocks in
stages 1-3 and PVT-v1 softmax blocks with a cls token in stage 4.
"""
import re
from collections import OrderedDict
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmlinattn.registry import register_model
from mmlinattn.utils.converter import warn_if_pretrained_disagrees
from ..utils import (LinAttnBackbone, Mlp, Stage, build_attention,
                     checkpoint_call, drop_path_schedule, init_linear_and_norm,
                     nchw_as_tokens, per_block_attn_cfgs, tokens_as_nchw,
                     tokens_to_nchw)

Grid = Tuple[int, int]


class ConvBNReLUEmbed(nn.Sequential):
    """Conv3x3-BN-ReLU layers turning a map into tokens.

    ``channels=[3, 32, 32, 64], strides=[2, 1, 2]`` is SOFT's stem (stride
    4); ``[C_in, C_out], [2]`` its downsampling between stages, which takes
    tokens and their grid. Layer indices equal the official ``proj`` indices
    (conv ``3k``, BN ``3k + 1``).
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[int]):
        layers: List[nn.Module] = []
        for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride, 1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True)
            ]
        super().__init__(*layers)

    def forward(self,
                x: torch.Tensor,
                hw: Optional[Grid] = None) -> Tuple[torch.Tensor, Grid]:
        """(B, C, H, W) images, or (B, H*W, C) tokens on the grid ``hw`` ->
        tokens (B, H'*W', D) and (H', W')."""
        # channels-last in (oneDNN's fast layout), so the map out is
        # already in token order
        x = (tokens_as_nchw(x, hw) if hw is not None else
             x.contiguous(memory_format=torch.channels_last))
        x = super().forward(x)
        return nchw_as_tokens(x), (x.shape[2], x.shape[3])


class SOFTBlock(nn.Module):
    """Post-LN block of SOFT's stages 1-3:
    ``y = LN(x + drop(attn(x, hw)))``, ``LN(y + drop(ffn(y)))``.

    ``attn`` is a config (:class:`SoftmaxFreeAttention` in SOFT), ``ffn``
    ``C -> 4C -> C`` with tanh-approximated GELU, ``drop`` an element-wise
    ``nn.Dropout`` (the official code feeds it the stochastic depth rate).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_cfg: dict,
                 host_facts: Optional[dict] = None,
                 dropout: float = 0.,
                 with_cp: bool = False):
        super().__init__()
        self.attn = build_attention(attn_cfg, embed_dims, num_heads, 'SOFT',
                                    **(host_facts or {}))
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = Mlp(
            embed_dims,
            4 * embed_dims,
            act_layer=partial(nn.GELU, approximate='tanh'))
        self.norm2 = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.with_cp = with_cp

    def _forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, hw)))
        return self.norm2(x + self.dropout(self.ffn(x)))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        return checkpoint_call(self._forward, x, hw, enabled=self.with_cp)


class ClsTokenStage(Stage):
    """A :class:`Stage` that prepends a learnt class token (with its own
    position embedding ``cls_pos_embed``) to the tokens after its
    embedding: SOFT's (PVT-v1's) last stage. The blocks see ``1 + H*W``
    tokens; the grid stays ``hw``."""
    num_extra_tokens = 1

    def __init__(self, *args, embed_dims: int, **kwargs):
        super().__init__(*args, embed_dims=embed_dims, **kwargs)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dims))

    def forward(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, Grid]:
        x, hw = self.embed(x, hw)
        cls_token = self.cls_token + self.cls_pos_embed
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], 1)
        for block in self.blocks:
            x = block(x, hw)
        return x, hw


@register_model()
class SOFT(LinAttnBackbone):
    """SOFT / SOFT-Norm backbone.

    Args:
        arch: ``'tiny'``, ``'small'``, ``'medium'``, ``'large'``, ``'huge'``
            (or ``t/s/m/l/h``), or a dict with ``embed_dims``, ``num_heads``
            and ``depths`` (4 entries each) and optionally ``sr_ratios``
            (landmark conv strides of stages 1-3, default ``[8, 4, 2]``) and
            ``conv_sizes`` (local V-conv kernels, default ``[9, 5, 3]``).
            ``'small'`` is the README's 24M model (depths ``[1, 3, 7, 4]``);
            the official repo's ``soft_small`` (38.9M) is
            ``dict(embed_dims=[64, 128, 320, 512],
            num_heads=[2, 4, 10, 16], depths=[1, 3, 20, 4])``.
        in_channels: image channels.
        pretrain_img_size: image size the position embeddings are sized for;
            other sizes interpolate them bilinearly.
        out_indices: stages to output (0-3), NCHW maps at strides
            4/8/16/32.
        out_type: ``'featmap'`` or ``'cls_token'`` (the final-normed cls
            token of stage 4, the classifier's feature; needs
            ``out_indices=(3,)`` and ``with_cls_token``).
        with_cls_token: prepend the cls token in stage 4 (official). Dense
            tasks use ``False`` (PVT v1 detection style): the stage-4 map
            then does not attend to a global token trained for
            classification and ``cls_token`` is not a parameter.
        sym_norm: SOFT-Norm attention (same parameters as SOFT).
        newton_variant, newton_iter, kernel_method, kernel_impl,
        max_landmarks: passed to every :class:`SoftmaxFreeAttention`
            (``newton_variant=None`` = the official variant of the model:
            ``'b'`` for SOFT-Norm, ``'a'`` for SOFT).
        attn_cfg: any registered attention instead of SOFT's: one config
            for every block or one per stage (stage 4 is PVT-v1's global
            softmax attention by default). Host facts: the stage ``grid``,
            ``sr_ratio`` (the landmark strides, 1 in stage 4),
            ``qkv_bias``.
        drop_path_rate: stochastic depth rate, linear over all blocks;
            element-wise dropout in stages 1-3 and DropPath in stage 4 as in
            the official code.
        frozen_stages: freeze the stem (0) and stages ``< frozen_stages``.
        norm_eval: BatchNorm of the stem and downsampling layers in eval
            mode during training.
        with_cp: activation checkpointing in every block.
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')``.

    Stage ``i`` in ``out_indices`` outputs its tokens after the last block;
    stage 3 additionally passes the final LayerNorm ``norm3`` (the
    classifier's ``norm``), stages 0-2 end in the blocks' post-LN already.
    """
    arch_zoo = {
        **dict.fromkeys(
            ['t', 'tiny'], {
                'embed_dims': [64, 128, 320, 512],
                'num_heads': [2, 4, 10, 16],
                'depths': [1, 2, 3, 2]
            }),
        **dict.fromkeys(
            ['s', 'small'], {
                'embed_dims': [64, 128, 320, 512],
                'num_heads': [2, 4, 10, 16],
                'depths': [1, 3, 7, 4]
            }),
        **dict.fromkeys(
            ['m', 'medium'], {
                'embed_dims': [64, 128, 288, 512],
                'num_heads': [2, 4, 9, 16],
                'depths': [1, 3, 29, 5]
            }),
        **dict.fromkeys(
            ['l', 'large'], {
                'embed_dims': [64, 128, 320, 512],
                'num_heads': [2, 4, 10, 16],
                'depths': [1, 3, 40, 5]
            }),
        **dict.fromkeys(
            ['h', 'huge'], {
                'embed_dims': [64, 128, 352, 512],
                'num_heads': [2, 4, 11, 16],
                'depths': [1, 5, 49, 5]
            }),
    }
    essential_keys = ('embed_dims', 'num_heads', 'depths')
    optional_arch_keys = {'sr_ratios': [8, 4, 2], 'conv_sizes': [9, 5, 3]}
    stem_channels = 32
    # layout before the stage contract: the stem was stages.0.patch_embed,
    # the class token a backbone parameter, stage 4's MLP ``ffn``
    key_migrations = (
        (r'^stages\.0\.patch_embed\.', 'patch_embed.'),
        (r'^stages\.(\d)\.patch_embed\.', r'stages.\1.downsample.'),
        (r'^(cls_token|cls_pos_embed)$', r'stages.3.\1'),
        (r'^(stages\.3\.blocks\.\d+\.)ffn\.', r'\1mlp.'),
    )

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 pretrain_img_size: int = 224,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 out_type: str = 'featmap',
                 with_cls_token: bool = True,
                 sym_norm: bool = False,
                 newton_variant: Optional[str] = None,
                 newton_iter: int = 20,
                 kernel_method: str = 'expand',
                 kernel_impl: str = 'auto',
                 max_landmarks: Optional[int] = None,
                 attn_cfg: Union[None, dict, Sequence[dict]] = None,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        self.arch_settings = self._parse_arch(arch)
        embed_dims = self.arch_settings['embed_dims']
        num_heads = self.arch_settings['num_heads']
        depths = self.arch_settings['depths']
        sr_ratios = self.arch_settings['sr_ratios']
        conv_sizes = self.arch_settings['conv_sizes']
        if out_type not in ('featmap', 'cls_token'):
            raise ValueError("out_type must be 'featmap' or 'cls_token', got "
                             f'{out_type!r}')
        if out_type == 'cls_token' and (not with_cls_token
                                        or self.out_indices != (3, )):
            raise ValueError("out_type='cls_token' needs with_cls_token=True "
                             'and out_indices=(3,)')
        self.in_channels = in_channels
        self.out_type = out_type
        self.with_cls_token = with_cls_token
        self.sym_norm = sym_norm
        self.embed_dims = embed_dims
        self.sr_ratios = sr_ratios
        self.pos_grids = [(pretrain_img_size // 2**(i + 2), ) * 2
                          for i in range(self.num_stages)]
        if min(self.pos_grids[-1]) < 1:
            raise ValueError('pretrain_img_size must be >= 32, got '
                             f'{pretrain_img_size}')
        self._min_input_size = max(2**(i + 2) * (r - 1) + 1
                                   for i, r in enumerate(sr_ratios))

        soft = dict(
            type='SoftmaxFreeAttention',
            sym_norm=sym_norm,
            newton_variant=newton_variant,
            newton_iter=newton_iter,
            kernel_method=kernel_method,
            kernel_impl=kernel_impl,
            max_landmarks=max_landmarks)
        attn_cfgs = per_block_attn_cfgs(
            attn_cfg, [dict(soft, conv_size=size) for size in conv_sizes] +
            [dict(type='SpatialReductionAttention')], depths)
        rates = drop_path_schedule(drop_path_rate, depths)
        self.patch_embed = ConvBNReLUEmbed([
            in_channels, self.stem_channels, self.stem_channels, embed_dims[0]
        ], [2, 1, 2])
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            facts = dict(
                grid=self.pos_grids[i],
                sr_ratio=sr_ratios[i] if i < 3 else 1,
                qkv_bias=True)
            if i < 3:
                blocks = [
                    SOFTBlock(
                        embed_dims[i],
                        num_heads[i],
                        attn_cfgs[i][j],
                        facts,
                        dropout=rate,
                        with_cp=with_cp) for j, rate in enumerate(rates[i])
                ]
            else:  # PVT v1: pre-LN, DropPath
                blocks = self.make_blocks(
                    embed_dims[i],
                    num_heads[i],
                    attn_cfgs[i],
                    rates[i],
                    facts,
                    norm_eps=1e-6,
                    with_cp=with_cp)
            downsample = ConvBNReLUEmbed([embed_dims[i - 1], embed_dims[i]],
                                         [2]) if i > 0 else None
            stage_type = ClsTokenStage if (i == 3
                                           and with_cls_token) else Stage
            self.stages.append(
                stage_type(
                    blocks,
                    downsample,
                    embed_dims=embed_dims[i],
                    pos_embed_grid=self.pos_grids[i]))
        if 3 in self.out_indices:
            self.norm3 = nn.LayerNorm(embed_dims[3], eps=1e-6)
        self._init_official()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        settings = cls.resolve_arch(arch)
        unknown = sorted(
            set(settings) - set(cls.essential_keys) -
            set(cls.optional_arch_keys))
        if unknown:
            raise ValueError(
                f'Unknown SOFT arch keys {unknown}; valid keys are '
                f'{sorted(cls.essential_keys + tuple(cls.optional_arch_keys))}'
            )
        for key, default in cls.optional_arch_keys.items():
            settings.setdefault(key, list(default))
        for key in cls.essential_keys:
            if len(settings[key]) != 4:
                raise ValueError(f'arch {key} needs 4 entries (one per '
                                 f'stage), got {settings[key]}')
        for key in cls.optional_arch_keys:
            if len(settings[key]) != 3:
                raise ValueError(f'arch {key} needs 3 entries (stages 1-3), '
                                 f'got {settings[key]}')
        return settings

    def init_weights(self) -> None:
        warn_if_pretrained_disagrees(
            self.init_cfg, 'SOFT', sym_norm=self.sym_norm)
        super().init_weights()

    def _init_official(self) -> None:
        """The official initialisation: Linear trunc_normal(0.02) with zero
        bias, LayerNorm (1, 0), position embeddings and cls token
        trunc_normal(0.02), convs and BatchNorm PyTorch defaults. SOFT-Norm
        keeps PyTorch's default Linear init in stages 1-3 (its blocks are
        rebuilt after the init in the official code)."""
        self.apply(init_linear_and_norm)
        if self.sym_norm:
            for stage in self.stages[:3]:
                for module in stage.modules():
                    if isinstance(module, nn.Linear):
                        module.reset_parameters()
        for name, param in self.named_parameters():
            if name.endswith(('pos_embed', 'cls_token')):
                nn.init.trunc_normal_(param, std=.02)

    @property
    def min_input_size(self) -> int:
        """The landmark convs (strides ``sr_ratios`` on the 1/4, 1/8, 1/16
        grids) need at least one landmark per stage."""
        return self._min_input_size

    def stage_output(self, index: int, x: torch.Tensor,
                     hw: Grid) -> torch.Tensor:
        """Stage 3 passes ``norm3`` (the classifier's final norm; stages 0-2
        end in the blocks' post-LN already); ``out_type='cls_token'`` gives
        the class token, ``'featmap'`` the map without it."""
        if index == 3:
            x = self.norm3(x)
            if self.out_type == 'cls_token':
                return x[:, 0]
            x = x[:, getattr(self.stages[3], 'num_extra_tokens', 0):]
        return tokens_to_nchw(x, hw)


# ------------------------------------------------- official checkpoints
_OFFICIAL_SOFT_BLOCK_KEYS = OrderedDict([
    ('att.mha.W_q.', 'attn.q.'),
    ('att.mha.W_v.', 'attn.v.'),
    ('att.mha.attn.Qlandmark_op.', 'attn.landmark_conv.'),
    ('att.mha.attn.Qnorm_act.0.', 'attn.landmark_norm.'),
    ('att.mha.attn.conv.', 'attn.local_conv.'),
    ('att.mha.ff.', 'attn.proj.'),
    ('att.norm1.', 'norm1.'),
    ('att.norm2.', 'norm2.'),
    ('att.ff1.', 'ffn.fc1.'),
    ('att.ff2.', 'ffn.fc2.'),
])


def _rename_block_key(rest: str, table: Dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def convert_soft_official(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official SOFT / SOFT-Norm ``state_dict`` (timm layout, e.g. a
    checkpoint's ``state_dict_ema``, ``module.`` already stripped) -> an
    mmpretrain ``ImageClassifier`` state dict (``backbone.*`` keys of
    :class:`SOFT`, ``head.fc.*``).

    Raises ``KeyError`` on keys it does not know, so new layouts are never
    silently dropped.
    """
    out: Dict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        if key == 'cls_token':
            out['backbone.stages.3.cls_token'] = value
        elif key == 'pos_embed4':
            out['backbone.stages.3.cls_pos_embed'] = value[:, :1]
            out['backbone.stages.3.pos_embed'] = value[:, 1:]
        elif (m := re.fullmatch(r'pos_embed([1-3])', key)):
            out[f'backbone.stages.{int(m[1]) - 1}.pos_embed'] = value
        elif (m := re.fullmatch(r'patch_embed1\.proj\.(.+)', key)):
            out[f'backbone.patch_embed.{m[1]}'] = value
        elif (m := re.fullmatch(r'patch_embed([2-4])\.proj\.(.+)', key)):
            out[f'backbone.stages.{int(m[1]) - 1}.downsample.{m[2]}'] = value
        elif (m := re.fullmatch(r'block([1-3])\.(\d+)\.(.+)', key)):
            rest = _rename_block_key(m[3], _OFFICIAL_SOFT_BLOCK_KEYS)
            if rest == m[3]:
                raise KeyError(f'unknown official SOFT key {key}')
            out[f'backbone.stages.{int(m[1]) - 1}.blocks.{m[2]}.{rest}'] = \
                value
        elif (m := re.fullmatch(r'block4\.(\d+)\.(.+)', key)):
            out[f'backbone.stages.3.blocks.{m[1]}.{m[2]}'] = value
        elif key.startswith('norm.'):
            out['backbone.norm3.' + key[len('norm.'):]] = value
        elif key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
        else:
            raise KeyError(f'unknown official SOFT key {key}')
    return out


def convert_soft_to_official(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`convert_soft_official` (classifier layout with
    ``backbone.`` / ``head.fc.`` keys -> official keys)."""
    soft_block = {v: k for k, v in _OFFICIAL_SOFT_BLOCK_KEYS.items()}
    out: Dict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            out['head.' + key[len('head.fc.'):]] = value
            continue
        if not key.startswith('backbone.'):
            raise KeyError(f'unexpected key {key}')
        key = key[len('backbone.'):]
        if key == 'stages.3.cls_token':
            out['cls_token'] = value
        elif key == 'stages.3.cls_pos_embed':
            continue  # part of pos_embed4
        elif (m := re.fullmatch(r'stages\.(\d)\.pos_embed', key)):
            stage = int(m[1])
            if stage == 3:
                value = torch.cat(
                    [state_dict['backbone.stages.3.cls_pos_embed'], value], 1)
            out[f'pos_embed{stage + 1}'] = value
        elif key.startswith('patch_embed.'):
            out[f'patch_embed1.proj.{key[len("patch_embed."):]}'] = value
        elif (m := re.fullmatch(r'stages\.(\d)\.downsample\.(.+)', key)):
            out[f'patch_embed{int(m[1]) + 1}.proj.{m[2]}'] = value
        elif (m := re.fullmatch(r'stages\.([0-2])\.blocks\.(\d+)\.(.+)', key)):
            rest = _rename_block_key(m[3], soft_block)
            out[f'block{int(m[1]) + 1}.{m[2]}.{rest}'] = value
        elif (m := re.fullmatch(r'stages\.3\.blocks\.(\d+)\.(.+)', key)):
            out[f'block4.{m[1]}.{m[2]}'] = value
        elif key.startswith('norm3.'):
            out['norm.' + key[len('norm3.'):]] = value
        else:
            raise KeyError(f'unexpected key backbone.{key}')
    return out


def infer_soft_arch(state_dict: Dict[str, torch.Tensor]) -> dict:
    """``embed_dims``, ``num_heads`` and ``depths`` of an official
    ``state_dict`` (stage-4 heads assume SOFT's head dim of 32)."""
    embed_dims, num_heads, depths = [], [], []
    for stage in range(1, 5):
        embed_dims.append(state_dict[f'pos_embed{stage}'].shape[-1])
        indices = {
            int(m[1])
            for key in state_dict
            if (m := re.match(rf'block{stage}\.(\d+)\.', key))
        }
        depths.append(len(indices))
        if stage < 4:
            conv = state_dict[f'block{stage}.0.att.mha.attn.conv.weight']
            num_heads.append(conv.shape[0])
        else:
            num_heads.append(embed_dims[-1] // 32)
    return dict(embed_dims=embed_dims, num_heads=num_heads, depths=depths)
