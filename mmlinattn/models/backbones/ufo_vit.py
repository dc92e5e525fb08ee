# Copyright (c) mmlinattn contributors. All rights reserved.
"""UFO-ViT: isotropic vision transformer with XNorm attention.

Song, "UFO-ViT: High Performance Linear Vision Transformer without Softmax",
arXiv:2109.14382 (re-titled "X-ViT", Song & Lee, arXiv:2205.13805).

The paper describes an XCiT/CaiT-style isotropic model: convolutional patch
embedding, learnable position embedding, blocks of XNorm attention + local
patch interaction (LPI) + FFN, and class-attention layers built from XNorm
attention. No official code exists; layer sizes and several details are our
choices, listed in ``docs/models/ufo_vit.md``. For detection and segmentation
an XCiT-style adapter (El-Nouby et al., NeurIPS 2021) resamples the outputs
of four evenly spaced blocks to strides 4/8/16/32.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmlinattn.registry import register_model
from ..attention.xnorm_attention import XNormAttention
from ..utils import (LinAttnBackbone, Mlp, Stage, build_attention,
                     build_drop_path, checkpoint_call, drop_path_schedule,
                     init_linear_and_norm, resize_grid_table_on_load,
                     nchw_as_tokens, resize_pos_embed, tokens_as_nchw)

OUT_STRIDES = (4, 8, 16, 32)
OUT_TYPES = ('cls_token', 'featmap')


class ConvStem(nn.Module):
    """XCiT-style patch embedding: log2(patch_size) 3x3 stride-2 convs with
    BatchNorm, GELU between them, widths ``C/2^(n-1), ..., C/2, C``.

    Padding 1 keeps every pixel: an H x W image gives ceil(H / p) x
    ceil(W / p) tokens.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int):
        super().__init__()
        num_convs = int(math.log2(patch_size))
        if patch_size < 2 or 2**num_convs != patch_size:
            raise ValueError('patch_size must be a power of two >= 2 (a '
                             f'stack of stride-2 convs), got {patch_size}')
        if embed_dims % 2**(num_convs - 1):
            raise ValueError(f'embed_dims {embed_dims} must be divisible by '
                             f'{2**(num_convs - 1)} for patch_size '
                             f'{patch_size} (stem widths halve per conv)')
        layers: List[nn.Module] = []
        channels = in_channels
        for i in range(num_convs):
            out_channels = embed_dims // 2**(num_convs - 1 - i)
            layers += [
                nn.Conv2d(channels, out_channels, 3, 2, 1, bias=False),
                nn.BatchNorm2d(out_channels)
            ]
            if i < num_convs - 1:
                layers.append(nn.GELU())
            channels = out_channels
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, C_in, H, W) -> tokens (B, H'*W', C) and (H', W')."""
        # channels-last in (oneDNN's fast layout), tokens out without a copy
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        return nchw_as_tokens(x), (x.shape[2], x.shape[3])


class LPI(nn.Module):
    """Local patch interaction: two 3x3 depthwise conv-BN-GELU layers on the
    token grid (UFO-ViT §3.3 wording; XCiT's code orders conv-GELU-BN-conv).
    """

    def __init__(self, dims: int, kernel_size: int = 3):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(
            dims, dims, kernel_size, 1, padding, groups=dims)
        self.bn1 = nn.BatchNorm2d(dims)
        self.conv2 = nn.Conv2d(
            dims, dims, kernel_size, 1, padding, groups=dims)
        self.bn2 = nn.BatchNorm2d(dims)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = tokens_as_nchw(x, hw)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return nchw_as_tokens(x)


def _layer_scale(dims: int,
                 init_value: Optional[float]) -> Optional[nn.Parameter]:
    if init_value is None:
        return None
    return nn.Parameter(torch.full((dims, ), float(init_value)))


def _scaled(x: torch.Tensor, scale: Optional[nn.Parameter]) -> torch.Tensor:
    return x if scale is None else x * scale


class UFOBlock(nn.Module):
    """``x + attn(LN x)``, ``x + LPI(LN x)``, ``x + FFN(LN x)`` with optional
    LayerScale ``ls1..3`` and stochastic depth; the attention is a config
    (XNorm attention in UFO-ViT).

    With ``with_cp`` the attention and FFN branches are recomputed in the
    backward pass; LPI is not, so its BatchNorm statistics are updated
    exactly once per step.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 qkv_bias: bool = True,
                 attn_cfg: Optional[dict] = None,
                 grid: Optional[Tuple[int, int]] = None,
                 norm_eps: float = 1e-6,
                 with_cp: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = build_attention(
            {
                'type': 'XNormAttention',
                **(attn_cfg or {})
            },
            embed_dims,
            num_heads,
            'UFOViT',
            grid=grid,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate)
        self.ls1 = _layer_scale(embed_dims, layer_scale_init_value)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.lpi = LPI(embed_dims)
        self.ls2 = _layer_scale(embed_dims, layer_scale_init_value)
        self.norm3 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.ffn = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)
        self.ls3 = _layer_scale(embed_dims, layer_scale_init_value)
        self.drop_path = build_drop_path(drop_path_rate)
        self.with_cp = with_cp

    def _attn_branch(self, x: torch.Tensor, hw: Tuple[int,
                                                      int]) -> torch.Tensor:
        return self.drop_path(_scaled(self.attn(self.norm1(x), hw), self.ls1))

    def _ffn_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(_scaled(self.ffn(self.norm3(x)), self.ls3))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = x + checkpoint_call(self._attn_branch, x, hw, enabled=self.with_cp)
        x = x + self.drop_path(_scaled(self.lpi(self.norm2(x), hw), self.ls2))
        return x + checkpoint_call(self._ffn_branch, x, enabled=self.with_cp)


class UFOClassBlock(nn.Module):
    """CaiT-style class attention built from XNorm attention: only the class
    token is updated, the patch tokens serve as keys and values::

        u = LN([cls; x]);  cls += UFO(query=u[:, :1], key=u);
        cls += FFN(LN cls)
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 qkv_bias: bool = True,
                 attn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-6,
                 with_cp: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = XNormAttention(
            embed_dims,
            num_heads,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            **(attn_cfg or {}))
        self.ls1 = _layer_scale(embed_dims, layer_scale_init_value)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.ffn = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)
        self.ls2 = _layer_scale(embed_dims, layer_scale_init_value)
        self.with_cp = with_cp

    def _forward(self, cls_token: torch.Tensor,
                 x: torch.Tensor) -> torch.Tensor:
        u = self.norm1(torch.cat([cls_token, x], dim=1))
        cls_token = cls_token + _scaled(self.attn(u[:, :1], key=u), self.ls1)
        return cls_token + _scaled(self.ffn(self.norm2(cls_token)), self.ls2)

    def forward(self, cls_token: torch.Tensor,
                x: torch.Tensor) -> torch.Tensor:
        return checkpoint_call(
            self._forward, cls_token, x, enabled=self.with_cp)


def _build_resampler(dims: int, scale: float) -> nn.Module:
    """Resample a (B, C, H, W) map by ``scale``: 2x2 stride-2 transposed
    convs (BN + GELU between them) to upsample, identity, or max pooling
    (``ceil_mode``, so odd grids keep their last row) to downsample."""
    if scale == 1:
        return nn.Identity()
    if scale < 1:
        kernel = round(1 / scale)
        return nn.MaxPool2d(kernel, kernel, ceil_mode=True)
    layers: List[nn.Module] = []
    for i in range(round(math.log2(scale))):
        if i:
            layers += [nn.BatchNorm2d(dims), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dims, dims, 2, 2))
    return nn.Sequential(*layers)


@register_model()
class UFOViT(LinAttnBackbone):
    """UFO-ViT backbone (arXiv:2109.14382 / 2205.13805).

    The paper's Table 1 (variant sizes) could not be established, so the
    ``arch_zoo`` variants are **our choice on the XCiT grid**, not the
    paper's sizes: ``tiny`` = XCiT-T12 (192, 12 blocks, 4 heads), ``small``
    = XCiT-S12 (384, 12, 8), ``medium`` = XCiT-S24 (384, 24, 8), ``base`` =
    XCiT-M24 (512, 24, 8); LayerScale init 1.0 for 12 blocks and 1e-5 for 24
    as in XCiT. Pass a dict with ``embed_dims``, ``depth``, ``num_heads``
    (optional ``layer_scale_init_value``) for other sizes.

    The blocks are split into four stages (``stage_ends``: last block of
    each; default: quarters of the depth).

    * ``out_type='cls_token'`` (classification): after all blocks, class-
      attention layers update a class token; returns ``(LN(cls),)`` of shape
      (B, C). Only ``out_indices=(3,)`` is valid.
    * ``out_type='featmap'`` (detection / segmentation): output ``i`` is
      ``LN`` of the tokens after stage ``i``, resampled by the XCiT-style
      adapter ``adapter{i}`` to stride ``(4, 8, 16, 32)[i]``; every map has
      C channels. An H x W input gives a stride-p grid of ceil(H/p) x
      ceil(W/p) tokens that the adapter scales by p/stride (pooling with
      ``ceil_mode``).

    Args:
        arch: zoo name (``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'medium'``/``'m'``, ``'base'``/``'b'``) or a custom dict.
        img_size: training resolution; sets the learnable position-embedding
            grid, which is bicubically resized for other inputs.
        patch_size: stride of the conv stem (a power of two).
        in_channels: image channels.
        out_type: ``'cls_token'`` or ``'featmap'``.
        out_indices: stages to output (see above).
        stage_ends: index of the last block of each of the four stages.
        num_cls_layers: class-attention layers (``cls_token`` only; CaiT and
            XCiT use 2; the paper's number is unknown).
        mlp_ratio: FFN hidden width / C.
        qkv_bias: bias of the q/k/v projections.
        attn_cfg: extra :class:`XNormAttention` arguments (``gamma_mode``,
            ``kv_norm_axis``, ``eps``, ``head_dims``, ``gamma_init``, ...).
        drop_rate: dropout after the attention / FFN projections.
        drop_path_rate: stochastic depth, linearly increasing over the
            blocks (none in class attention, as in CaiT).
        norm_eps: LayerNorm epsilon.
        with_cp: activation checkpointing in every block.
        frozen_stages, norm_eval, pretrained, init_cfg: see
            :class:`LinAttnBackbone`; stage -1 is the stem and the position
            embedding, stage ``i`` its blocks plus ``norm{i}``/``adapter{i}``
            (and the class-attention part for the last stage).
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': 192, 'depth': 12, 'num_heads': 4,
            'layer_scale_init_value': 1.0}),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': 384, 'depth': 12, 'num_heads': 8,
            'layer_scale_init_value': 1.0}),
        **dict.fromkeys(['m', 'medium'], {
            'embed_dims': 384, 'depth': 24, 'num_heads': 8,
            'layer_scale_init_value': 1e-5}),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': 512, 'depth': 24, 'num_heads': 8,
            'layer_scale_init_value': 1e-5}),
    }  # yapf: disable
    essential_keys = ('embed_dims', 'depth', 'num_heads')

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_type: str = 'cls_token',
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 stage_ends: Optional[Sequence[int]] = None,
                 num_cls_layers: int = 2,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 attn_cfg: Optional[dict] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        arch = self.resolve_arch(arch)
        embed_dims, depth = arch['embed_dims'], arch['depth']
        num_heads = arch['num_heads']
        layer_scale = arch.get('layer_scale_init_value')
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type must be one of {OUT_TYPES}, got '
                             f'{out_type!r}')
        if out_type == 'cls_token' and self.out_indices != (3, ):
            raise ValueError(
                "out_type='cls_token' returns only the last stage "
                f'(out_indices=(3,)), got out_indices={self.out_indices}; '
                "set out_type='featmap' for multi-scale feature maps")
        if depth < self.num_stages:
            raise ValueError(f'depth {depth} < {self.num_stages}: every '
                             'stage needs at least one block')
        if stage_ends is None:
            stage_ends = [
                depth * (i + 1) // self.num_stages - 1
                for i in range(self.num_stages)
            ]
        stage_ends = tuple(int(i) for i in stage_ends)
        if (len(stage_ends) != self.num_stages or stage_ends[-1] != depth - 1
                or any(a >= b
                       for a, b in zip((-1, ) + stage_ends, stage_ends))):
            raise ValueError(
                f'stage_ends must be {self.num_stages} strictly increasing '
                f'block indices ending at depth - 1 = {depth - 1}, got '
                f'{stage_ends}')
        img_size = ((img_size, img_size)
                    if isinstance(img_size, int) else tuple(img_size))

        self.embed_dims = embed_dims
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_type = out_type
        self.stage_ends = stage_ends
        self.with_cp = with_cp

        self.patch_embed = ConvStem(in_channels, embed_dims, patch_size)
        self.pos_grid = (math.ceil(img_size[0] / patch_size),
                         math.ceil(img_size[1] / patch_size))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dims))
        attn_cfg = {'type': 'XNormAttention', **(attn_cfg or {})}
        block_args = dict(
            embed_dims=embed_dims,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_rate=drop_rate,
            layer_scale_init_value=layer_scale,
            qkv_bias=qkv_bias,
            norm_eps=norm_eps,
            with_cp=with_cp)
        depths = [b - a for a, b in zip((-1, ) + stage_ends, stage_ends)]
        self.stages = nn.ModuleList(
            Stage([
                UFOBlock(
                    drop_path_rate=rate,
                    attn_cfg=attn_cfg,
                    grid=self.pos_grid,
                    **block_args) for rate in rates
            ]) for rates in drop_path_schedule(drop_path_rate, depths))
        # layout before the stage contract: one flat list of blocks
        self.key_migrations = tuple(
            (rf'^blocks\.{sum(depths[:i]) + j}\.', f'stages.{i}.blocks.{j}.')
            for i, depth in enumerate(depths) for j in range(depth))

        if out_type == 'cls_token':
            # class attention is XNorm's cross attention whatever the blocks
            xnorm_args = {
                k: v
                for k, v in attn_cfg.items() if k != 'type'
            } if attn_cfg['type'] in ('XNormAttention',
                                      XNormAttention) else {}
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
            self.cls_blocks = nn.ModuleList(
                UFOClassBlock(attn_cfg=xnorm_args, **block_args)
                for _ in range(num_cls_layers))
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        else:
            self.add_output_norms([embed_dims] * self.num_stages, norm_eps)
            for i in self.out_indices:
                self.add_module(
                    f'adapter{i}',
                    _build_resampler(embed_dims, patch_size / OUT_STRIDES[i]))

        self._init_weights()
        if self.frozen_stages >= 0:
            self._freeze_stages()

    # ------------------------------------------------------------- weights
    def _init_weights(self) -> None:
        """DeiT/XCiT initialisation; XNorm attention keeps its own."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.out_type == 'cls_token':
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        attention_parts = {
            id(m)
            for attn in self.modules() if isinstance(attn, XNormAttention)
            for m in attn.modules()
        }
        for module in self.modules():
            if id(module) not in attention_parts:
                init_linear_and_norm(module)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Bicubically resize a square checkpoint position embedding (e.g.
        trained at 224) to this model's grid."""
        resize_grid_table_on_load(state_dict, prefix + 'pos_embed',
                                  self.pos_embed, self.pos_grid, 'bicubic')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------- stages
    def stem_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        return [self.patch_embed, self.pos_embed]

    def head_parts(self) -> List[Union[nn.Module, nn.Parameter]]:
        if self.out_type == 'cls_token':
            return [self.cls_token, self.cls_blocks, self.norm]
        return []

    # ------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x, hw = self.patch_embed(x)
        return x + resize_pos_embed(
            self.pos_embed, self.pos_grid, hw, mode='bicubic'), hw

    def stage_output(self, index: int, x: torch.Tensor,
                     hw: Tuple[int, int]) -> torch.Tensor:
        """``featmap``: ``adapter{i}(norm{i}(x))`` at the output stride;
        ``cls_token``: the class-attention head's normed class token."""
        if self.out_type == 'featmap':
            return getattr(self, f'adapter{index}')(
                super().stage_output(index, x, hw))
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.cls_blocks:
            cls_token = block(cls_token, x)
        return self.norm(cls_token)[:, 0]
