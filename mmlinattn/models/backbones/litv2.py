# Copyright (c) mmlinattn contributors. All rights reserved.
"""LITv2: HiLo attention and deformable token merging.

Pan, Cai, Zhuang. "Fast Vision Transformers with HiLo Attention."
NeurIPS 2022. https://arxiv.org/abs/2205.13213 (official code:
https://github.com/ziplab/LITv2). Deformable token merging comes from LITv1
(Pan et al., AAAI 2022, https://arxiv.org/abs/2105.14217).

Module and parameter names equal the official ones, so official
classification, detection and segmentation state dicts map 1:1 (see
:func:`convert_litv2_official`).
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torchvision.ops import deform_conv2d

from mmlinattn.registry import register_model
from ..utils import (ConvPatchEmbed, DWConv, LinAttnBackbone, Stage,
                     drop_path_schedule, init_conv_fan_out,
                     init_linear_and_norm, nchw_as_tokens, per_block_attn_cfgs,
                     run_in_float32, tokens_as_nchw, tokens_to_nchw)
from ..utils.gemm import linear, matmul, weight_grad

Size2 = Tuple[int, int]


def _tap_positions(x: torch.Tensor, offset: torch.Tensor,
                   weight: torch.Tensor, stride: Size2, padding: Size2,
                   dilation: Size2) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y, x) pixel positions, each (B, K, Ho, Wo), that DCNv1 samples for
    tap ``k = i * kw + j`` (torchvision's offset layout: channel ``2k`` =
    dy, ``2k+1`` = dx), after checking the supported configuration (one
    offset group, ``groups=1``)."""
    B, C = x.shape[:2]
    C_out, C_in, kh, kw = weight.shape
    if C_in != C:
        raise ValueError('the deformable-conv decompositions support '
                         'groups=1 only')
    K = kh * kw
    Ho, Wo = offset.shape[-2:]
    if offset.shape[1] != 2 * K:
        raise ValueError('the deformable-conv decompositions support one '
                         f'offset group: offset must have {2 * K} channels')
    dtype, device = x.dtype, x.device
    oy = torch.arange(Ho, dtype=dtype, device=device) * stride[0] - padding[0]
    ox = torch.arange(Wo, dtype=dtype, device=device) * stride[1] - padding[1]
    ty = torch.arange(kh, dtype=dtype, device=device) * dilation[0]
    tx = torch.arange(kw, dtype=dtype, device=device) * dilation[1]
    tap_y, tap_x = torch.meshgrid(ty, tx, indexing='ij')
    offset = offset.view(B, K, 2, Ho, Wo)
    y = tap_y.reshape(K, 1, 1) + oy.view(1, Ho, 1) + offset[:, :, 0]
    x_pos = tap_x.reshape(K, 1, 1) + ox.view(1, 1, Wo) + offset[:, :, 1]
    return y, x_pos


def deform_conv2d_pytorch(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: Size2 = (1, 1),
    padding: Size2 = (0, 0),
    dilation: Size2 = (1, 1)
) -> torch.Tensor:
    """DCNv1 (one offset group, ``groups=1``) from ``F.grid_sample`` and a
    matmul; numerically the forward of :func:`torchvision.ops.deform_conv2d`.

    A sample at (y, x) is bilinear, each corner outside the map counting as
    0 (``grid_sample`` with zero padding and ``align_corners=False``
    implements exactly that rule). Used for ONNX export, where torchvision's
    op has no exporter; every op here has an ONNX equivalent
    (``GridSample`` is opset 16). Its gradients equal torchvision's except
    at integer sample positions (e.g. the zero offsets DTM starts from),
    where the normalised grid may land a rounding error below the integer
    and the one-sided derivative is taken from the other side; eager CPU
    therefore runs :func:`deform_conv2d_gather`.
    """
    B, C, H, W = x.shape
    C_out, _, kh, kw = weight.shape
    K = kh * kw
    Ho, Wo = offset.shape[-2:]
    y, x_pos = _tap_positions(x, offset, weight, stride, padding, dilation)
    # Pixel centres -> [-1, 1] for align_corners=False.
    grid = torch.stack(((2 * x_pos + 1) / W - 1, (2 * y + 1) / H - 1), -1)
    sampled = F.grid_sample(
        x,
        grid.view(B, K * Ho, Wo, 2),
        mode='bilinear',
        padding_mode='zeros',
        align_corners=False)  # (B, C, K*Ho, Wo)
    cols = sampled.view(B, C * K, Ho * Wo)
    out = torch.matmul(weight.reshape(C_out, C * K), cols)
    if bias is not None:
        out = out + bias.view(1, C_out, 1)
    return out.view(B, C_out, Ho, Wo)


def deform_conv2d_gather(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: Size2 = (1, 1),
    padding: Size2 = (0, 0),
    dilation: Size2 = (1, 1)
) -> torch.Tensor:
    """DCNv1 (one offset group, ``groups=1``) by gathering the four bilinear
    corners of every tap as rows of the channels-last map, then one matmul:
    :func:`torchvision.ops.deform_conv2d`'s values and gradients to float
    rounding, including its one-sided derivative at integer positions
    (corners ``floor(p)`` and ``floor(p) + 1``).

    The map is zero-padded by two pixels and ``floor(p)`` is clamped into
    ``[-2, size]``, so every corner lies inside the padded map and corners
    outside the image read zeros without masks. Runs DTM on CPU, where it is
    faster than torchvision's kernel (forward and backward); returns a
    channels-last map.
    """
    B, C, H, W = x.shape
    C_out, _, kh, kw = weight.shape
    K = kh * kw
    Ho, Wo = offset.shape[-2:]
    y, x_pos = _tap_positions(x, offset, weight, stride, padding, dilation)
    y, x_pos = y.permute(0, 2, 3, 1), x_pos.permute(0, 2, 3, 1)
    y0, x0 = torch.floor(y), torch.floor(x_pos)
    ly, lx = y - y0, x_pos - x0  # (B, Ho, Wo, K)
    Hp, Wp = H + 4, W + 4
    first = ((torch.arange(B, device=x.device) * (Hp * Wp)).view(B, 1, 1, 1) +
             (y0.clamp(-2, H).long() + 2) * Wp + x0.clamp(-2, W).long() +
             2).reshape(-1)
    out = _GatheredDeformConv.apply(
        x.permute(0, 2, 3, 1), first, ly.reshape(-1), lx.reshape(-1),
        weight.permute(0, 2, 3, 1).reshape(C_out, K * C), bias)
    return out.view(B, Ho, Wo, C_out).permute(0, 3, 1, 2)


def _bilinear_corners(first: torch.Tensor, ly: torch.Tensor, lx: torch.Tensor,
                      row_stride: int):
    """(row shift, weight, d weight / d ly, d weight / d lx) of the four
    corners of bilinear samples whose top-left corner is row ``first``."""
    return ((0, (1 - ly) * (1 - lx), lx - 1, ly - 1),
            (1, (1 - ly) * lx, -lx, 1 - ly),
            (row_stride, ly * (1 - lx), 1 - lx, -ly),
            (row_stride + 1, ly * lx, lx, ly))


def _sample_rows(rows: torch.Tensor, first: torch.Tensor, ly: torch.Tensor,
                 lx: torch.Tensor, row_stride: int) -> torch.Tensor:
    """(P, C) bilinear samples: the four corner rows, weighted."""
    sampled = None
    for shift, weight, _, _ in _bilinear_corners(first, ly, lx, row_stride):
        corner = rows.index_select(0, first + shift) * weight.unsqueeze(1)
        sampled = corner if sampled is None else sampled + corner
    return sampled


def _padded_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) map zero-padded by two pixels, as (B * Hp * Wp, C)
    rows."""
    return F.pad(x, (0, 0, 2, 2, 2, 2)).reshape(-1, x.shape[-1])


class _GatheredDeformConv(torch.autograd.Function):
    """Bilinear samples of the padded channels-last map (rows), then the
    conv as one matmul. Keeps only the (B, H, W, C) map (which the offset
    conv keeps anyway), the corner indices and the fractions for backward
    (the padded rows and the sampled columns, input-sized for DTM, are
    built again)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, first: torch.Tensor, ly: torch.Tensor,
                lx: torch.Tensor, kernel: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        row_stride = x.shape[2] + 4
        cols = _sample_rows(_padded_rows(x), first, ly, lx,
                            row_stride).view(-1, kernel.shape[1])
        ctx.save_for_backward(x, first, ly, lx, kernel)
        return linear(cols, kernel, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, first, ly, lx, kernel = ctx.saved_tensors
        need_x, _, need_ly, need_lx, need_kernel, need_bias = (
            ctx.needs_input_grad[:6])
        rows, row_stride = _padded_rows(x), x.shape[2] + 4
        grad_kernel = (weight_grad(
            grad,
            _sample_rows(rows, first, ly, lx,
                         row_stride).view(-1, kernel.shape[1]))
                       if need_kernel else None)
        grad_sampled = matmul(grad, kernel).view(first.shape[0],
                                                 rows.shape[1])
        grad_rows = torch.zeros_like(rows) if need_x else None
        grad_ly = torch.zeros_like(ly) if need_ly or need_lx else None
        grad_lx = torch.zeros_like(lx) if need_ly or need_lx else None
        for shift, weight, d_ly, d_lx in _bilinear_corners(
                first, ly, lx, row_stride):
            index = first + shift
            if grad_rows is not None:
                grad_rows.index_add_(0, index,
                                     grad_sampled * weight.unsqueeze(1))
            if grad_ly is not None:
                along = (rows.index_select(0, index) * grad_sampled).sum(1)
                grad_ly += d_ly * along
                grad_lx += d_lx * along
        grad_x = (grad_rows.view(x.shape[0], x.shape[1] + 4, row_stride,
                                 -1)[:, 2:-2, 2:-2] if need_x else None)
        return (grad_x, None, grad_ly if need_ly else None,
                grad_lx if need_lx else None, grad_kernel,
                grad.sum(0) if need_bias else None)


class DeformableConv2d(nn.Module):
    """DCNv1 with its offset-predicting conv (``DeformConv2dPack``).

    Parameters ``weight``, ``bias`` and ``conv_offset`` (zero-initialised
    conv predicting ``2 * k * k`` offsets) have the names and layouts of the
    official LITv2 / mmcv modules. Runs on
    :func:`torchvision.ops.deform_conv2d` on CUDA (any batch size) and while
    tracing, on :func:`deform_conv2d_gather` on CPU and on
    :func:`deform_conv2d_pytorch` while exporting to ONNX.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int = 2,
                 stride: int = 2,
                 padding: int = 0):
        super().__init__()
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.conv_offset = nn.Conv2d(in_channels, 2 * kernel_size**2,
                                     kernel_size, stride, padding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(x)
        if torch.onnx.is_in_onnx_export():
            return deform_conv2d_pytorch(x, offset, self.weight, self.bias,
                                         self.stride, self.padding)
        # Half precision runs in fp32, as torchvision's CUDA autocast rule
        # and the official apex float_function do (there is no CPU bf16
        # kernel and no CPU autocast rule). On CPU the gather decomposition
        # is faster than torchvision's kernel, forward and backward; tracing
        # (FLOP counts) keeps torchvision's op.
        on_cpu = x.device.type == 'cpu' and not torch.jit.is_tracing()
        return run_in_float32(
            deform_conv2d_gather if on_cpu else deform_conv2d,
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding)


class DeformableTokenMerging(nn.Module):
    """DTM: 2x2 stride-2 deformable conv -> BatchNorm -> GELU on a token
    grid (official ``DTM``; odd sides are floored like the official dense
    code)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.dconv = DeformableConv2d(in_channels, out_channels, 2, 2, 0)
        self.norm_layer = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor,
                hw: Size2) -> Tuple[torch.Tensor, Size2]:
        x = self.act(self.norm_layer(self.dconv(tokens_as_nchw(x, hw))))
        return nchw_as_tokens(x), (x.shape[2], x.shape[3])


@register_model()
class LITv2(LinAttnBackbone):
    """LITv2 backbone (Pan et al., NeurIPS 2022).

    Four stages at strides 4/8/16/32: a 4x4 conv patch embedding, ConvFFN
    blocks in the stages without attention (``has_msa``), HiLo blocks in the
    others (``local_ws`` window per stage; 1 = global attention) and
    deformable token merging between stages. Outputs are NCHW maps of the
    ``out_indices`` stages, each through a LayerNorm ``norm{i}``, except
    stage 0 when ``with_stage0_norm=False``: the official detection
    checkpoints have no ``norm0``, the segmentation ones do. The final
    classification norm is ``norm3``.

    Any input size works: the image is zero-padded to a multiple of
    ``patch_size``, HiLo pads its maps to multiples of the window, and DTM
    floors odd sides (official dense behaviour); the input must be large
    enough for the last requested stage to be non-empty (29 px per side for
    stage 3).

    Args:
        arch: ``'small'``/``'s'``, ``'medium'``/``'m'``, ``'base'``/``'b'``
            or a dict with ``embed_dims`` (int, doubled per stage, or one per
            stage), ``depths`` and ``num_heads``.
        in_channels: image channels.
        patch_size: patch-embedding stride.
        pretrain_img_size: fixes the stage ``grid`` told to a swapped-in
            attention with learnt position tables (HiLo has none).
        mlp_ratio: ConvFFN hidden ratio.
        qkv_bias: bias in the HiLo q/k/v projections.
        qk_scale: overrides ``head_dim ** -0.5``.
        alpha: fraction of Lo-Fi heads in every HiLo layer.
        local_ws: HiLo window size per stage (ignored where ``has_msa`` is
            false). ``(0, 0, 4, 1)`` gives the ``ws4`` detection variants;
            the ImageNet weights (trained with 2) load unchanged.
        has_msa: which stages use HiLo blocks.
        attn_cfg: any registered attention instead of HiLo in the
            ``has_msa`` stages: one config for all or one per stage. Host
            facts: the stage ``grid``, ``window_size`` (``local_ws``),
            ``qkv_bias``.
        drop_rate: dropout inside the ConvFFN.
        drop_path_rate: stochastic depth, linear over all blocks.
        out_indices: stages to output.
        with_stage0_norm: add ``norm0`` when stage 0 is an output.
        frozen_stages: freeze the patch embedding and stages
            ``0..frozen_stages-1`` (with their DTM and output norms).
        norm_eval: keep DTM BatchNorms in eval mode while training.
        with_cp: activation checkpointing in every block.
        pretrained: deprecated, use ``init_cfg``.
        init_cfg: e.g. ``dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')`` for a converted checkpoint.
    """
    arch_zoo = {
        **dict.fromkeys(['s', 'small'], {
                            'embed_dims': 96,
                            'depths': [2, 2, 6, 2],
                            'num_heads': [3, 6, 12, 24]
                        }),
        **dict.fromkeys(['m', 'medium'], {
                            'embed_dims': 96,
                            'depths': [2, 2, 18, 2],
                            'num_heads': [3, 6, 12, 24]
                        }),
        **dict.fromkeys(
            ['b', 'base'], {
                'embed_dims': 128,
                'depths': [2, 2, 18, 2],
                'num_heads': [4, 8, 16, 32]
            }),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads')

    # layout before the stage contract: layers.i held the blocks of stage i
    # and the token merging after it
    key_migrations = tuple(
        (rf'^layers\.{i}\.downsample\.', f'stages.{i + 1}.downsample.')
        for i in range(3)) + (
            (r'^layers\.(\d)\.blocks\.', r'stages.\1.blocks.'), )

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 patch_size: int = 4,
                 pretrain_img_size: int = 224,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 alpha: float = 0.9,
                 local_ws: Sequence[int] = (0, 0, 2, 1),
                 has_msa: Sequence[bool] = (False, False, True, True),
                 attn_cfg: Union[None, dict, Sequence[dict]] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.2,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 with_stage0_norm: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(out_indices, frozen_stages, norm_eval, pretrained,
                         init_cfg)
        arch = self.resolve_arch(arch)
        depths, num_heads = list(arch['depths']), list(arch['num_heads'])
        dims = arch['embed_dims']
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(self.num_stages)]
        self.check_per_stage(
            depths=depths,
            num_heads=num_heads,
            embed_dims=dims,
            local_ws=local_ws,
            has_msa=has_msa)
        self.in_channels = in_channels
        self.num_features = list(dims)
        self.patch_size = patch_size
        self.with_stage0_norm = with_stage0_norm
        hilo = dict(type='HiLoAttention', alpha=alpha, qk_scale=qk_scale)
        if attn_cfg is None:
            attn_cfgs = [[hilo if msa else None] * depth
                         for msa, depth in zip(has_msa, depths)]
        else:  # attention in the has_msa stages, any registered type
            attn_cfgs = [[
                cfg if msa else None for cfg in stage
            ] for msa, stage in zip(
                has_msa, per_block_attn_cfgs(attn_cfg, [hilo] * 4, depths))]

        self.patch_embed = ConvPatchEmbed(
            in_channels,
            dims[0],
            kernel_size=patch_size,
            stride=patch_size,
            pad_to_stride=True)
        rates = drop_path_schedule(drop_path_rate, depths)
        stages = []
        for i in range(self.num_stages):
            blocks = self.make_blocks(
                dims[i],
                num_heads[i],
                attn_cfgs[i],
                rates[i],
                dict(
                    grid=(pretrain_img_size // patch_size // 2**i, ) * 2,
                    window_size=local_ws[i] or None,
                    qkv_bias=qkv_bias),
                mlp_ratio=mlp_ratio,
                conv_ffn=True,
                drop_rate=drop_rate,
                with_cp=with_cp)
            downsample = DeformableTokenMerging(dims[i - 1],
                                                dims[i]) if i > 0 else None
            stages.append(Stage(blocks, downsample))
        self.stages = nn.ModuleList(stages)

        self.add_output_norms(dims, skip=() if with_stage0_norm else (0, ))
        self.apply(init_linear_and_norm)
        for module in self.modules():
            if isinstance(module, DWConv):
                init_conv_fan_out(module.dwconv)
        if self.frozen_stages >= 0:
            self._freeze_stages()

    @property
    def min_input_size(self) -> int:
        """Smallest image side for which the last output stage is
        non-empty (each token merging halves the map)."""
        return self.patch_size * (2**self.out_indices[-1] - 1) + 1


def _strip_prefix(state_dict: Mapping[str, torch.Tensor],
                  prefix: str) -> Dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _layers_to_stages(key: str) -> str:
    """Official ``layers.i.blocks`` / ``layers.i.downsample`` (the merging
    after stage i) -> ``stages.i.blocks`` / ``stages.{i+1}.downsample``."""
    match = re.match(r'layers\.(\d)\.(blocks|downsample)\.', key)
    if match is None:
        return key
    stage = int(match.group(1)) + (match.group(2) == 'downsample')
    return f'stages.{stage}.{match.group(2)}.{key[match.end():]}'


def _stages_to_layers(key: str) -> str:
    """Inverse of :func:`_layers_to_stages`."""
    match = re.match(r'stages\.(\d)\.(blocks|downsample)\.', key)
    if match is None:
        return key
    layer = int(match.group(1)) - (match.group(2) == 'downsample')
    return f'layers.{layer}.{match.group(2)}.{key[match.end():]}'


def convert_litv2_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official LITv2 state dict -> mmlinattn state dict.

    * Classification (``litv2_{s,m,b,b_384}.pth``, keys ``patch_embed.*``,
      ``layers.*``, ``norm.*``, ``head.*``): backbone keys get ``backbone.``,
      the final ``norm`` becomes ``backbone.norm3`` and ``head`` the
      mmpretrain ``LinearClsHead``'s ``head.fc`` -> an ``ImageClassifier``
      with ``LITv2(out_indices=(3,))`` loads it strictly.
    * Detection / segmentation (``backbone.*``, ``neck.*``, heads): only
      the backbone's ``layers`` are renamed (``backbone.norm1..3``, plus
      ``backbone.norm0`` in segmentation checkpoints ->
      ``with_stage0_norm=True``, already match).

    ``layers.i.blocks`` -> ``stages.i.blocks`` and ``layers.i.downsample``
    (the merging after stage i) -> ``stages.{i+1}.downsample``. A
    ``module.`` (DDP) prefix is stripped in both cases.
    """
    state_dict = _strip_prefix(state_dict, 'module.')
    converted = OrderedDict()
    if any(k.startswith('backbone.') for k in state_dict):
        for key, value in state_dict.items():
            if key.startswith('backbone.'):
                key = 'backbone.' + _layers_to_stages(key[len('backbone.'):])
            converted[key] = value
        return converted
    for key, value in state_dict.items():
        if key.startswith('head.'):
            converted['head.fc.' + key[len('head.'):]] = value
        elif key.startswith('norm.'):
            converted['backbone.norm3.' + key[len('norm.'):]] = value
        else:
            converted['backbone.' + _layers_to_stages(key)] = value
    return converted


def to_official(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`convert_litv2_official` for an mmpretrain
    ``ImageClassifier`` or a detection / segmentation state dict."""
    official = OrderedDict()
    if any(
            k.startswith('neck.') or k.startswith('decode_head.')
            for k in state_dict):
        for key, value in state_dict.items():
            if key.startswith('backbone.'):
                key = 'backbone.' + _stages_to_layers(key[len('backbone.'):])
            official[key] = value
        return official
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            official['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.norm3.'):
            official['norm.' + key[len('backbone.norm3.'):]] = value
        elif key.startswith('backbone.'):
            official[_stages_to_layers(key[len('backbone.'):])] = value
        else:
            raise KeyError(f'unexpected key {key!r} in a LITv2 classifier '
                           'state dict')
    return official
