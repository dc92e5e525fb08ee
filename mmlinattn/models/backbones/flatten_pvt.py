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
import warnings
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from mmlinattn.registry import register_model
from ..attention.focused_linear_attention import FocusedLinearAttention
from ..utils import (ConvPatchEmbed, LinAttnBackbone, Mlp, build_drop_path,
                     checkpoint_call, resize_pos_embed, tokens_to_nchw)

Grid = Tuple[int, int]


class SpatialReductionSoftmaxAttention(nn.Module):
    """PVT's softmax attention over spatially reduced keys/values (the
    ``'S'`` stages of ``attn_type``), with the official parameter names
    ``q``, ``kv``, ``sr``, ``norm``, ``proj``; runs on
    ``F.scaled_dot_product_attention``."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 sr_ratio: int = 1,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible '
                             f'by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def project(self, x: torch.Tensor, hw: Grid) -> Tuple[torch.Tensor, ...]:
        """-> per-head q (B, h, N, d), k and v (B, h, n, d), key grid."""
        B, N, C = x.shape
        H, W = hw
        h = self.num_heads
        q = self.q(x).view(B, N, h, C // h).transpose(1, 2)
        kv_hw = (H, W)
        if self.sr_ratio > 1:
            if min(H, W) < self.sr_ratio:
                raise ValueError(
                    f'a {H}x{W} token grid is smaller than sr_ratio='
                    f'{self.sr_ratio}; use a larger input')
            x = self.sr(x.transpose(1, 2).reshape(B, C, H, W))
            kv_hw = (x.shape[2], x.shape[3])
            x = self.norm(x.flatten(2).transpose(1, 2))
        k, v = self.kv(x).view(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        return q, k, v, kv_hw

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v, _ = self.project(x, hw)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class FLattenPVTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then
    ``x + mlp(norm2(x))`` with stochastic depth; the MLP is PVTv2's ConvFFN
    when ``conv_ffn``."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 attn_type: str = 'L',
                 key_grid: Optional[Grid] = None,
                 sr_ratio: int = 1,
                 focusing_factor: float = 3.,
                 kernel_size: int = 5,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 conv_ffn: bool = False,
                 fp32_attention: bool = True,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        if attn_type == 'L':
            self.attn = FocusedLinearAttention(
                embed_dims,
                num_heads,
                key_grid=key_grid,
                qkv_layout='q_kv',
                qkv_bias=qkv_bias,
                sr_ratio=sr_ratio,
                focusing_factor=focusing_factor,
                kernel_size=kernel_size,
                proj_drop=drop_rate,
                fp32_attention=fp32_attention)
        else:
            self.attn = SpatialReductionSoftmaxAttention(
                embed_dims,
                num_heads,
                qkv_bias=qkv_bias,
                sr_ratio=sr_ratio,
                attn_drop=attn_drop_rate,
                proj_drop=drop_rate)
        self.drop_path = build_drop_path(drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = Mlp(
            embed_dims,
            int(embed_dims * mlp_ratio),
            drop=drop_rate,
            use_dwconv=conv_ffn)

    def _forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))

    def forward(self, x: torch.Tensor, hw: Grid) -> torch.Tensor:
        return checkpoint_call(self._forward, x, hw, enabled=self.with_cp)


class FLattenPVTStage(nn.Module):
    """Patch embedding, optional absolute ``pos_embed`` (resized bilinearly
    from ``grid`` when the input grid differs), blocks, optional norm."""

    def __init__(self, patch_embed: ConvPatchEmbed, blocks: List[nn.Module],
                 embed_dims: int, grid: Grid, pos_embed: bool, norm: bool,
                 drop_rate: float):
        super().__init__()
        self.patch_embed = patch_embed
        self.grid = grid
        self.pos_embed = nn.Parameter(
            torch.zeros(1, grid[0] *
                        grid[1], embed_dims)) if pos_embed else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dims, eps=1e-6) if norm else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Grid]:
        """(B, C_in, H_in, W_in) -> tokens (B, H*W, C) and (H, W)."""
        x, hw = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.grid, hw)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, hw)
        if self.norm is not None:
            x = self.norm(x)
        return x, hw


def _parse_per_stage(name: str, value, allowed: str) -> str:
    if (not isinstance(value, str) or len(value) != 4
            or set(value) - set(allowed)):
        raise ValueError(f'{name} must be 4 characters from {allowed!r} '
                         f'(one per stage), got {value!r}')
    return value


class _FLattenPVTBase(LinAttnBackbone):
    """Shared constructor and forward of :class:`FLattenPVT` and
    :class:`FLattenPVTv2`; subclasses set the stem/stage layout flags."""
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios')
    overlapping_patch_embed: bool
    use_pos_embed: bool
    conv_ffn: bool
    stage_norm: bool
    conv_fan_out_init: bool  # PVTv2 inits every conv fan-out normal

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
        for key in self.essential_keys:
            if len(arch[key]) != self.num_stages:
                raise ValueError(f'arch[{key!r}] needs {self.num_stages} '
                                 f'values, got {arch[key]!r}')
        self.embed_dims = list(arch['embed_dims'])
        self.depths = list(arch['depths'])
        self.attn_type = _parse_per_stage('attn_type', attn_type, 'LS')
        for name, ratios in (('la_sr_ratios', la_sr_ratios), ('sr_ratios',
                                                              sr_ratios)):
            if len(ratios) != self.num_stages or min(ratios) < 1:
                raise ValueError(f'{name} must be {self.num_stages} ints '
                                 f'>= 1, got {ratios!r}')
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        self.pretrain_img_size = tuple(pretrain_img_size)

        total_depth = sum(self.depths)
        dpr = [
            drop_path_rate * j / max(total_depth - 1, 1)
            for j in range(total_depth)
        ]  # linear stochastic depth
        stages = []
        grid = self.pretrain_img_size
        for i in range(self.num_stages):
            patch_embed = self._make_patch_embed(
                in_channels if i == 0 else self.embed_dims[i - 1],
                self.embed_dims[i],
                first=i == 0)
            stride = patch_embed.stride  # both embeddings round up
            grid = (-(-grid[0] // stride), -(-grid[1] // stride))
            sr = int(la_sr_ratios[i] if self.attn_type[i] ==
                     'L' else sr_ratios[i])
            blocks = [
                FLattenPVTBlock(
                    self.embed_dims[i],
                    arch['num_heads'][i],
                    arch['mlp_ratios'][i],
                    attn_type=self.attn_type[i],
                    key_grid=(grid[0] // sr, grid[1] // sr),
                    sr_ratio=sr,
                    focusing_factor=focusing_factor,
                    kernel_size=kernel_size,
                    qkv_bias=qkv_bias,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    drop_path_rate=dpr[sum(self.depths[:i]) + j],
                    conv_ffn=self.conv_ffn,
                    fp32_attention=fp32_attention,
                    with_cp=with_cp) for j in range(self.depths[i])
            ]
            stages.append(
                FLattenPVTStage(
                    patch_embed,
                    blocks,
                    self.embed_dims[i],
                    grid,
                    pos_embed=self.use_pos_embed,
                    norm=self.stage_norm,
                    drop_rate=drop_rate))
        self.stages = nn.ModuleList(stages)
        self.apply(self._official_init)
        for stage in self.stages:
            if stage.pos_embed is not None:
                trunc_normal_(stage.pos_embed, std=.02)
        self._register_load_state_dict_pre_hook(self._resize_grid_params)

    def _make_patch_embed(self, in_channels: int, embed_dims: int,
                          first: bool) -> ConvPatchEmbed:
        if self.overlapping_patch_embed:
            kernel, stride = (7, 4) if first else (3, 2)
            return ConvPatchEmbed(
                in_channels, embed_dims, kernel, stride, padding=kernel // 2)
        stride = 4 if first else 2
        return ConvPatchEmbed(
            in_channels, embed_dims, stride, stride, pad_to_stride=True)

    def _official_init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) and self.conv_fan_out_init:
            fan_out = (
                module.kernel_size[0] * module.kernel_size[1] *
                module.out_channels // module.groups)
            nn.init.normal_(module.weight, 0, (2.0 / fan_out)**0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _resize_grid_params(self, state_dict: dict, prefix: str, *args,
                            **kwargs) -> None:
        """Load ``pos_embed`` / ``positional_encoding`` learnt on another
        square grid (e.g. a 384 fine-tune) by resizing them to this model's
        pretraining grid, bilinear / bicubic as the official code."""
        for name, param in self.named_parameters():
            if not name.endswith(('pos_embed', 'positional_encoding')):
                continue
            key = prefix + name
            value = state_dict.get(key)
            if value is None or value.shape == param.shape:
                continue
            side = int(round(value.shape[1]**0.5))
            if value.dim() != 3 or side * side != value.shape[1]:
                continue  # let load_state_dict report the mismatch
            stage = int(name.split('.')[1])
            grid = self.stages[stage].grid
            if name.endswith('positional_encoding'):
                module = self.get_submodule(name.rsplit('.', 1)[0])
                grid, mode = module.key_grid, module.pos_interp_mode
            else:
                mode = 'bilinear'
            state_dict[key] = resize_pos_embed(
                value, (side, side), grid, mode=mode)
            warnings.warn(f'{key}: resized {side}x{side} -> '
                          f'{grid[0]}x{grid[1]} ({mode})')

    def _stage_parts(self, stage: int) -> Iterable[nn.Module]:
        return [] if stage < 0 else [self.stages[stage]]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images of any size -> feature maps (B, C_i, H_i, W_i)
        of the ``out_indices`` stages (strides 4, 8, 16, 32)."""
        if x.dim() != 4:
            raise ValueError('expected a (B, C, H, W) image batch, got shape '
                             f'{tuple(x.shape)}')
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw = stage(x)
            x = tokens_to_nchw(x, hw)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


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
        **dict.fromkeys(['s', 'small'], dict(depths=[3, 4, 6, 3], **_PVT_DIMS)),
        **dict.fromkeys(['m', 'medium'], dict(
                            depths=[3, 4, 18, 3], **_PVT_DIMS)),
        **dict.fromkeys(['l', 'large', 'b'],
                        dict(depths=[3, 8, 27, 3], **_PVT_DIMS)),
    }
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
    (re.compile(r'^patch_embed(\d)\.'), 'stages.{}.patch_embed.'),
    (re.compile(r'^pos_embed(\d)$'), 'stages.{}.pos_embed'),
    (re.compile(r'^block(\d)\.'), 'stages.{}.blocks.'),
    (re.compile(r'^norm(\d)\.'), 'stages.{}.norm.'),
]
_OURS_TO_OFFICIAL = [
    (re.compile(r'^stages\.(\d)\.patch_embed\.'), 'patch_embed{}.'),
    (re.compile(r'^stages\.(\d)\.pos_embed$'), 'pos_embed{}'),
    (re.compile(r'^stages\.(\d)\.blocks\.'), 'block{}.'),
    (re.compile(r'^stages\.(\d)\.norm\.'), 'norm{}.'),
]


def _rename(key: str, rules, offset: int) -> Optional[str]:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return (template.format(int(match.group(1)) + offset) +
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
