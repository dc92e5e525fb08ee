# Copyright (c) mmlinattn contributors. All rights reserved.
"""Every mmlinattn backbone as a timm model: ``import mmlinattn.timm``.

Importing this module (and only this one: ``import mmlinattn`` never imports
timm) registers one timm model per arch of every family, under the official
repositories' names where they exist (``soft_tiny``, ``soft_norm_tiny``,
``flatten_pvt_v2_b0``, ``flatten_swin_tiny_patch4_224``,
``flatten_cswin_tiny``, ``litv2_small``, ...) and ours for the rest
(``soft_small_paper``, ``ufo_vit_*``, ``plain_vit_*``)::

    import timm
    import mmlinattn.timm  # noqa: F401

    model = timm.create_model('flatten_swin_tiny_patch4_224', pretrained=True,
                              pretrained_cfg_overlay=dict(file='ckpt.pth'))

Each model is a :class:`LinAttnClassifier` around the mmlinattn backbone
(no second implementation) with mmpretrain's classification head: global
average pooling of the backbone's final (normed) map, or the class token of
backbones with ``out_type='cls_token'`` (SOFT, UFO-ViT), then a linear
layer. The logits equal those of the mmpretrain ``ImageClassifier`` of
``configs/classification`` with the same weights, and ``pretrained=True``
with ``pretrained_cfg_overlay=dict(file=...)`` loads our converted files
(``{'state_dict': {'backbone.*', 'head.fc.*'}, 'meta'}``). The
``pretrained_cfg`` holds each model's official evaluation transform.
"""
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices
from timm.models._registry import generate_default_cfgs, register_model

from mmlinattn.models.utils import tokens_to_nchw
from mmlinattn.registry import MODELS

__all__ = ['LinAttnClassifier', 'checkpoint_filter_fn']


def _stage_channels_and_reductions(
        backbone: nn.Module) -> Tuple[List[int], List[int]]:
    """Channels and strides of the stage outputs: pyramids (``embed_dims``
    or ``num_features`` per stage) double the stride of their stem
    (``patch_embed.stride``; 4 for SOFT's conv stem, which has none) every
    stage; isotropic backbones (one ``embed_dims``) keep the patch
    stride."""
    num_stages = backbone.num_stages
    dims = getattr(backbone, 'embed_dims', None)
    if dims is None:
        dims = backbone.num_features
    if isinstance(dims, int):
        stride = getattr(backbone, 'patch_size', None) or getattr(
            backbone.patch_embed, 'stride')
        return [dims] * num_stages, [stride] * num_stages
    stem = getattr(backbone.patch_embed, 'stride', 4)
    return list(dims), [stem * 2**i for i in range(num_stages)]


class LinAttnClassifier(nn.Module):
    """A timm classifier around an mmlinattn backbone.

    ``forward_features`` is the backbone's last output (a (B, C, H, W) map
    after its final norm, or the (B, C) class token of ``cls_token``
    backbones), ``forward_head`` pools it (``'avg'``; ``'token'``: already
    pooled) and applies dropout and the linear ``head``.

    Args:
        backbone: the backbone config (``type`` and its arguments).
        num_classes: classes of the linear head (0: none).
        in_chans: image channels (the backbone's ``in_channels``).
        global_pool: ``'avg'`` (feature maps) or ``'token'`` (class-token
            backbones), ``''`` for none; ``None``: the backbone's.
        drop_rate: dropout before the head.
        **backbone_args: override ``backbone`` entries (``arch``,
            ``drop_path_rate``, ...).
    """

    def __init__(self,
                 backbone: dict,
                 num_classes: int = 1000,
                 in_chans: int = 3,
                 global_pool: Optional[str] = None,
                 drop_rate: float = 0.,
                 **backbone_args):
        super().__init__()
        self.backbone = MODELS.build(
            dict(backbone, in_channels=in_chans, **backbone_args))
        channels, reductions = _stage_channels_and_reductions(self.backbone)
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f'backbone.stages.{i}')
            for i, (c, r) in enumerate(zip(channels, reductions))
        ]
        self.num_features = self.head_hidden_size = channels[-1]
        self.pool_type = ('token' if getattr(self.backbone, 'out_type', None)
                          == 'cls_token' else 'avg')
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(
            num_classes,
            self.pool_type if global_pool is None else global_pool)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self,
                         num_classes: int,
                         global_pool: Optional[str] = None) -> None:
        """A new (trunc-normal initialised) head of ``num_classes``."""
        if global_pool is not None:
            if global_pool not in (self.pool_type, ''):
                raise ValueError(f"global_pool must be '{self.pool_type}' or "
                                 f"'' for this model, got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features,
                              num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.trunc_normal_(self.head.weight, std=.02)
            nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing (``with_cp``) in every block."""
        for module in self.backbone.modules():
            if hasattr(module, 'with_cp'):
                module.with_cp = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward_head(self,
                     x: torch.Tensor,
                     pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=(-2, -1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        output_fmt: str = 'NCHW',
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (and the final features).

        Args:
            x: (B, C, H, W) images.
            indices: stages to return (int: the last n; ``None``: all).
            norm: pass a stage's tokens through the backbone's output norm
                ``norm{i}`` where it has one (the final norm of the last
                stage); otherwise the stage's tokens as they are.
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the intermediates (stages after
                the last requested one are not run).
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(
                f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(
            len(self.feature_info), indices)
        backbone = self.backbone
        backbone.check_input(x)
        stages = backbone.stages
        if intermediates_only:
            stages = stages[:max_index + 1]
        intermediates = []
        x, hw = backbone.embed(x)
        for i, stage in enumerate(stages):
            x, hw = stage(x, hw)
            if i in take_indices:
                out = x
                if norm and getattr(backbone, f'norm{i}', None) is not None:
                    out = getattr(backbone, f'norm{i}')(out)
                out = tokens_to_nchw(
                    out[:, getattr(stage, 'num_extra_tokens', 0):], hw)
                intermediates.append(
                    out.permute(0, 2, 3, 1) if output_fmt == 'NHWC' else out)
        if intermediates_only:
            return intermediates
        return backbone.stage_output(len(stages) - 1, x, hw), intermediates

    def prune_intermediate_layers(self,
                                  indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Keep what :meth:`forward_intermediates` needs for ``indices``:
        drop the later stages, with ``prune_head`` the head and the
        backbone's parts after its last stage (class-attention head), with
        ``prune_norm`` the output norms. Afterwards only
        :meth:`forward_intermediates` with ``intermediates_only`` works."""
        take_indices, max_index = feature_take_indices(
            len(self.feature_info), indices)
        backbone = self.backbone
        dropped = [
            getattr(backbone, f'norm{i}', None)
            for i in range(len(self.feature_info))
            if prune_norm or i > max_index
        ]
        if prune_head:
            dropped += backbone.head_parts()
            self.reset_classifier(0, '')
        backbone.stages = backbone.stages[:max_index + 1]
        dropped_ids = {id(part) for part in dropped if part is not None}
        for name, part in [
                *backbone.named_children(),
                *backbone.named_parameters(recurse=False)
        ]:
            if id(part) in dropped_ids:
                delattr(backbone, name)
        return take_indices


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor],
                         model: nn.Module) -> Dict[str, torch.Tensor]:
    """A converted (mmpretrain ``ImageClassifier``) state dict -> the
    :class:`LinAttnClassifier` keys: ``head.fc.*`` -> ``head.*``,
    ``data_preprocessor.*`` dropped, ``backbone.*`` kept."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            out['head.' + key[len('head.fc.'):]] = value
        elif not key.startswith('data_preprocessor.'):
            out[key] = value
    return out


# ----------------------------------------------------------- registration
_FLATTEN = dict(
    origin_url='https://github.com/LeapLabTHU/FLatten-Transformer',
    paper_ids='arXiv:2308.00442',
    crop_mode='squash')  # official eval: squash to 256 x 256, crop 224
_SOFT = dict(
    origin_url='https://github.com/fudan-zvg/SOFT',
    paper_ids='arXiv:2110.11945,arXiv:2207.03341',
    crop_pct=0.9,
    first_conv='backbone.patch_embed.0',
    pool_size=None)
_LITV2 = dict(
    origin_url='https://github.com/ziplab/LITv2', paper_ids='arXiv:2205.13213')
_UFO = dict(
    paper_ids='arXiv:2109.14382',
    first_conv='backbone.patch_embed.proj.0',
    pool_size=None)
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12))
_SOFT_SMALL_OFFICIAL = dict(  # the repo's soft_small; arch 'small' = paper's
    embed_dims=[64, 128, 320, 512],
    num_heads=[2, 4, 10, 16],
    depths=[1, 3, 20, 4])

# timm name -> (backbone config, pretrained_cfg entries)
_MODELS: Dict[str, Tuple[dict, dict]] = {}


def _add(name: str, cfg: dict, **backbone) -> None:
    _MODELS[name] = (backbone, cfg)


for _size in ('tiny', 'small', 'medium', 'large', 'huge'):
    for _prefix, _norm in (('soft_', False), ('soft_norm_', True)):
        _soft = dict(type='SOFT', out_type='cls_token', sym_norm=_norm)
        if _size == 'small':
            _add(_prefix + 'small', _SOFT, arch=_SOFT_SMALL_OFFICIAL, **_soft)
            _add(_prefix + 'small_paper', _SOFT, arch='small', **_soft)
        else:
            _add(_prefix + _size, _SOFT, arch=_size, **_soft)
for _size in ('tiny', 'small', 'medium', 'large'):
    _add(f'flatten_pvt_{_size}', _FLATTEN, type='FLattenPVT', arch=_size)
for _size in ('b0', 'b1', 'b2', 'b3', 'b4', 'b5'):
    _add(f'flatten_pvt_v2_{_size}', _FLATTEN, type='FLattenPVTv2', arch=_size)
for _size in ('tiny', 'small', 'base'):
    _add(
        f'flatten_swin_{_size}_patch4_224',
        _FLATTEN,
        type='FLattenSwin',
        arch=_size)
    _add(f'flatten_cswin_{_size}', _FLATTEN, type='FLattenCSWin', arch=_size)
# TEST.CROP False: a direct 384 x 384 resize
_add(
    'flatten_swin_base_patch4_384',
    dict(_FLATTEN, crop_pct=1.0, **_384),
    type='FLattenSwin',
    arch='base-384')
_add(
    'flatten_cswin_base_384',
    dict(_FLATTEN, **_384),
    type='FLattenCSWin',
    arch='base-384')
for _size in ('small', 'medium', 'base'):
    _add(f'litv2_{_size}', _LITV2, type='LITv2', arch=_size)
_add(
    'litv2_base_384',
    dict(_LITV2, crop_pct=1.0, crop_mode='squash', **_384),
    type='LITv2',
    arch='base',
    pretrain_img_size=384)
for _size in ('tiny', 'small', 'medium', 'base'):
    _add(
        f'ufo_vit_{_size}',
        _UFO,
        type='UFOViT',
        arch=_size,
        out_type='cls_token')
for _size in ('tiny', 'small', 'base'):
    _add(
        f'plain_vit_{_size}',
        dict(pool_size=(14, 14)),
        type='PlainViT',
        arch=f'deit-{_size}')


def _cfg(**kwargs) -> dict:
    return dict(
        {
            'url': '',
            'num_classes': 1000,
            'input_size': (3, 224, 224),
            'pool_size': (7, 7),
            'crop_pct': 0.875,
            'crop_mode': 'center',
            'interpolation': 'bicubic',
            'mean': IMAGENET_DEFAULT_MEAN,
            'std': IMAGENET_DEFAULT_STD,
            'first_conv': 'backbone.patch_embed.proj',
            'classifier': 'head',
            'fixed_input_size': False,
        }, **kwargs)


default_cfgs = generate_default_cfgs({
    name: _cfg(**cfg)
    for name, (_, cfg) in _MODELS.items()
})


def _make_factory(name: str,
                  backbone: dict) -> Callable[..., LinAttnClassifier]:
    """The timm entry point of ``name`` (``drop_path_rate`` 0 unless given,
    as timm's models)."""

    def factory(pretrained: bool = False, **kwargs) -> LinAttnClassifier:
        out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
        kwargs.setdefault('drop_path_rate', 0.)
        return build_model_with_cfg(
            LinAttnClassifier,
            name,
            pretrained,
            backbone=backbone,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
            **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = f'{name}: mmlinattn {backbone}.'
    return factory


for _name, (_backbone, _) in _MODELS.items():
    globals()[_name] = register_model(_make_factory(_name, _backbone))

registered_models: Tuple[str, ...] = tuple(_MODELS)
