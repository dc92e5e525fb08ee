# Copyright (c) mmlinattn contributors. All rights reserved.
"""The one model builder of the command-line tools (get_flops, benchmark,
pytorch2onnx, vis_attention): a config file of any toolbox or a registered
backbone name, without applying ``init_cfg`` (nothing is downloaded), with
an optional checkpoint, in eval mode."""
import functools
import importlib
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

#: toolbox -> data sample class that ``mode='tensor'`` forwards may need
_DATA_SAMPLES = {
    'mmdet': ('mmdet.structures', 'DetDataSample'),
}


def parse_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """``--shape H`` or ``--shape H W`` -> (H, W)."""
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise ValueError(f'--shape takes H or H W, got {list(shape)}')


class LinearClassifier(nn.Module):
    """Backbone + global average pooling + ``Linear(C, num_classes)``: the
    parameters and FLOPs of mmpretrain's ``ImageClassifier`` with
    ``GlobalAveragePooling`` and ``LinearClsHead`` (and of the official
    classifiers' heads), without mmpretrain."""

    def __init__(self, backbone: nn.Module, in_channels: int,
                 num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)[-1]
        if feat.dim() == 4:
            feat = feat.mean((2, 3))
        return self.head(feat)


def _last_channels(backbone: nn.Module, shape: Tuple[int, int]) -> int:
    with torch.no_grad():
        return backbone(torch.zeros(1, 3, *shape))[-1].shape[1]


def _eval(model: nn.Module) -> nn.Module:
    """``model.eval()`` that also works for modules whose ``train()``
    override returns None (mmpretrain's SwinTransformer)."""
    model.eval()
    return model


def _tensor_mode(model: nn.Module, scope: str, shape: Tuple[int, int]) -> str:
    """Make ``model(inputs)`` the network forward of a toolbox model;
    returns a note on what was changed for counting ('' if nothing).

    Two-stage detectors: the RPN's NMS is switched off so that the RoI
    heads always see ``max_per_img`` proposals (1000 in mmdet's configs,
    the mask head the first 100) -- mmdet 2.x's ``forward_dummy``
    convention behind the papers' Mask R-CNN FLOPs. With NMS the count
    would depend on how many random-weight proposals survive.
    """
    note = ''
    rpn_cfg = getattr(getattr(model, 'rpn_head', None), 'test_cfg', None)
    if rpn_cfg is not None and 'nms' in rpn_cfg:
        rpn_cfg.nms.iou_threshold = 1.  # suppresses nothing
        note = (f' (RPN NMS off: RoI heads on {rpn_cfg.max_per_img} '
                'proposals)')
    data_samples = None
    if scope in _DATA_SAMPLES:  # e.g. two-stage detectors read img_shape
        module, name = _DATA_SAMPLES[scope]
        sample_cls = getattr(__import__(module, fromlist=[name]), name)
        data_samples = [
            sample_cls(
                metainfo=dict(
                    img_shape=shape,
                    ori_shape=shape,
                    pad_shape=shape,
                    batch_input_shape=shape,
                    scale_factor=(1., 1.)))
        ]
    model.forward = functools.partial(
        model.forward, data_samples=data_samples, mode='tensor')
    return note


def load_weights(model: nn.Module, checkpoint: str,
                 backbone_only: bool) -> None:
    """Load ``checkpoint`` strictly (a backbone takes the ``backbone.*``
    keys of a whole-model file); the error names what does not match."""
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = state.get('state_dict', state)
    if backbone_only and any(k.startswith('backbone.') for k in state):
        state = {
            k[len('backbone.'):]: v
            for k, v in state.items() if k.startswith('backbone.')
        }
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f'{checkpoint} does not match the model: missing '
                           f'{missing[:10]}, unexpected {unexpected[:10]}')


def build_model(
    config: Optional[str] = None,
    backbone: Optional[str] = None,
    arch: Optional[str] = None,
    backbone_args: Optional[dict] = None,
    cfg_options: Optional[dict] = None,
    backbone_only: bool = False,
    *,
    num_classes: Optional[int] = None,
    checkpoint: Optional[str] = None,
    tensor_mode: bool = True,
    shape: Tuple[int, int] = (224, 224)
) -> Tuple[nn.Module, str]:
    """Build a model for a tool; returns it (eval mode, SyncBN reverted)
    and a short description.

    Args:
        config: a config file of any toolbox (``backbone_only`` takes
            ``model.backbone``, or ``backbone`` of a backbone-only config).
        backbone: a registered backbone type instead, e.g. ``'SOFT'`` or
            another toolbox's ``'mmpretrain.SwinTransformer'``, built with
            ``backbone_args``; ``num_classes`` adds a linear classifier.
        arch: ``arch`` of the backbone (overrides the config's).
        cfg_options: merged into the config.
        checkpoint: weights to load strictly.
        tensor_mode: make a toolbox model's ``model(inputs)`` its network
            forward (``mode='tensor'``), as the analysis tools count it.
        shape: (H, W) used to size the linear classifier and the data
            samples of ``tensor_mode``.
    """
    import mmlinattn  # noqa: F401  (registers our modules)
    from mmengine.model import BaseModel, revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    if (config is None) == (backbone is None):
        raise ValueError('give either a config file or --backbone NAME')
    if backbone is not None:
        init_default_scope('mmlinattn')
        scope = backbone.partition('.')[0] if '.' in backbone else None
        if scope not in (None, 'mmlinattn'):
            # 'mmpretrain.SwinTransformer' etc.: a baseline from another
            # toolbox; its registry must exist before mmengine can resolve
            # the scope (the registry then imports its own models)
            try:
                importlib.import_module(f'{scope}.registry')
            except ImportError as error:
                raise ValueError(
                    f'--backbone {backbone}: cannot import '
                    f'{scope}.registry ({error}); install '
                    f'{scope} or drop the scope prefix') from error
        model_cfg = dict(type=backbone, **(backbone_args or {}))
        if arch is not None:
            model_cfg['arch'] = arch
        model = MODELS.build(model_cfg)
        kind = f'backbone {backbone}' + (f' ({arch})' if arch else '')
        if checkpoint:
            load_weights(model, checkpoint, backbone_only=True)
        if num_classes:
            model = LinearClassifier(model, _last_channels(model, shape),
                                     num_classes)
            kind += f' + linear classifier ({num_classes} classes)'
        return _eval(revert_sync_batchnorm(model)), kind

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = cfg.model if 'model' in cfg else cfg
    if arch is not None:
        model_cfg.get('backbone', model_cfg).arch = arch
    scope = cfg.get('default_scope', 'mmlinattn')
    init_default_scope(scope)
    # building applies no init_cfg: no checkpoint is read or downloaded
    if backbone_only:
        backbone_cfg = dict(model_cfg.backbone)
        backbone_cfg.pop('_delete_', None)
        model = MODELS.build(backbone_cfg)
        kind = f'backbone of {config}'
    else:
        model = MODELS.build(model_cfg)
        kind = f'{type(model).__name__} from {config}'
    if checkpoint:
        load_weights(model, checkpoint, backbone_only)
    if not backbone_only and tensor_mode and isinstance(model, BaseModel):
        kind += _tensor_mode(model, scope, shape)
    return _eval(revert_sync_batchnorm(model)), kind
