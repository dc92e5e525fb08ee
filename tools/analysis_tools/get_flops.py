# Copyright (c) mmlinattn contributors. All rights reserved.
"""Parameters and FLOPs of a backbone, classifier, detector or segmentor.

Counts with mmengine's jit-trace complexity analysis plus the handles of
:mod:`mmlinattn.ops` (Gaussian-kernel ops) and :mod:`mmlinattn.utils.flops`
(``scaled_dot_product_attention``, ``torchvision::deform_conv2d``, SOFT's
Newton-Schulz inverse). Convention: one multiply-add = one FLOP (as in
mmengine, fvcore and the papers' tables); softmax, GELU, exp and other
elementwise ops are not counted -- they are listed as "not counted" so
nothing is dropped silently. Toolbox models are measured on their network
forward (``mode='tensor'``: backbone, neck and heads, no post-processing);
batch size 1.

Examples::

    # a config of any toolbox (classifier, RetinaNet, Mask R-CNN, FPN, ...)
    python tools/analysis_tools/get_flops.py \
        configs/detection/retinanet_litv2_small_1x.py --shape 1280 800
    # its backbone alone
    python tools/analysis_tools/get_flops.py \
        configs/detection/retinanet_litv2_small_1x.py --shape 1280 800 \
        --backbone-only
    # a backbone without a config, with a linear classifier on top
    python tools/analysis_tools/get_flops.py --backbone LITv2 --arch small \
        --shape 224 --num-classes 1000 --out litv2_s.json
"""
import argparse
import functools
import importlib
import json
import logging
import warnings
from collections import Counter
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction

#: toolbox -> data sample class that ``mode='tensor'`` forwards may need
_DATA_SAMPLES = {
    'mmdet': ('mmdet.structures', 'DetDataSample'),
}


def parse_shape(shape: Sequence[int]) -> Tuple[int, int]:
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


def _eval(model: nn.Module) -> nn.Module:
    """``model.eval()`` that also works for modules whose ``train()``
    override returns None (mmpretrain's SwinTransformer)."""
    model.eval()
    return model


def build_model(
    config: Optional[str] = None,
    backbone: Optional[str] = None,
    arch: Optional[str] = None,
    backbone_args: Optional[dict] = None,
    cfg_options: Optional[dict] = None,
    backbone_only: bool = False,
    num_classes: Optional[int] = None,
    shape: Tuple[int, int] = (224, 224)
) -> Tuple[nn.Module, str]:
    """Build the module to analyse; ``module(torch.Tensor (1, 3, H, W))``
    runs it. Returns the module (eval mode) and a short description.

    Either ``config`` (a config file of any toolbox; ``backbone_only``
    takes ``model.backbone``) or ``backbone`` (a registered backbone name,
    ``arch`` and extra ``backbone_args``; ``num_classes`` adds a linear
    classifier) must be given.
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
                raise ValueError(f'--backbone {backbone}: cannot import '
                                 f'{scope}.registry ({error}); install '
                                 f'{scope} or drop the scope prefix') from error
        model_cfg = dict(type=backbone, **(backbone_args or {}))
        if arch is not None:
            model_cfg['arch'] = arch
        model = MODELS.build(model_cfg)
        kind = f'backbone {backbone}' + (f' ({arch})' if arch else '')
        if num_classes:
            model = LinearClassifier(model, _last_channels(model, shape),
                                     num_classes)
            kind += f' + linear classifier ({num_classes} classes)'
        return _eval(revert_sync_batchnorm(model)), kind

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmlinattn')
    init_default_scope(scope)
    # building applies no init_cfg: no checkpoint is read or downloaded
    if backbone_only:
        model = MODELS.build(cfg.model.backbone)
        kind = f'backbone of {config}'
    else:
        model = MODELS.build(cfg.model)
        kind = f'{type(model).__name__} from {config}'
        if isinstance(model, BaseModel):
            kind += _tensor_mode(model, scope, shape)
    return _eval(revert_sync_batchnorm(model)), kind


def analyze(model: nn.Module,
            inputs: Tuple[torch.Tensor, ...],
            table_depth: int = 0) -> Dict:
    """Params, FLOPs (multiply-adds; total and per operator kind),
    activations and the ops that were not counted, from one traced forward
    of ``model(*inputs)``."""
    from mmengine.analysis import (ActivationAnalyzer, FlopAnalyzer,
                                   parameter_count)
    from mmengine.analysis.print_helper import complexity_stats_table
    from mmengine.logging import MMLogger

    from mmlinattn.utils.flops import register_flop_handles
    register_flop_handles()
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the unsupported ops are reported below
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')  # tracer warnings
            flops = FlopAnalyzer(model, inputs)
            flops.unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(False)
            total_flops = flops.total()
            by_operator = dict(flops.by_operator())
            acts = ActivationAnalyzer(model, inputs)
            acts.unsupported_ops_warnings(False)
            acts.uncalled_modules_warnings(False)
            total_acts = acts.total()
            table = complexity_stats_table(
                flops, max_depth=table_depth,
                activations=acts) if table_depth else ''
    finally:
        logger.setLevel(level)
    return dict(
        params=parameter_count(model)[''],
        flops=total_flops,
        flops_by_operator=by_operator,
        activations=total_acts,
        not_counted=dict(Counter(flops.unsupported_ops())),
        table=table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Params and FLOPs (multiply-adds) of a model')
    parser.add_argument('config', nargs='?', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[224],
        help='input H [W] (default 224; detection papers use 1280 800)')
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='analyse model.backbone of the config')
    parser.add_argument(
        '--backbone',
        help='registered backbone name '
        '(instead of a config), e.g. LITv2')
    parser.add_argument('--arch', help='arch of --backbone')
    parser.add_argument(
        '--backbone-args',
        nargs='+',
        action=DictAction,
        default={},
        help='extra --backbone arguments, key=value')
    parser.add_argument(
        '--num-classes',
        type=int,
        help='with --backbone: add global pooling + Linear(C, N), the '
        'classifier head of the papers\' counts')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--show-table',
        type=int,
        default=0,
        metavar='DEPTH',
        help='per-module table down to DEPTH')
    parser.add_argument('--out', help='write the result as JSON')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    shape = parse_shape(args.shape)
    model, kind = build_model(args.config, args.backbone, args.arch,
                              args.backbone_args, args.cfg_options,
                              args.backbone_only, args.num_classes, shape)
    model = model.to(args.device)
    inputs = (torch.randn(1, 3, *shape, device=args.device), )
    result = analyze(model, inputs, args.show_table)
    by_op = ', '.join(f'{k} {v / 1e9:.3f}' for k, v in sorted(
        result['flops_by_operator'].items(), key=lambda kv: -kv[1]))
    not_counted = ', '.join(f'{k} x{v}'
                            for k, v in sorted(result['not_counted'].items()))
    split = '=' * 60
    print(f'{split}\nModel: {kind}\nInput shape: (1, 3, {shape[0]}, '
          f'{shape[1]})\nParams: {result["params"] / 1e6:.3f} M\n'
          f'FLOPs (multiply-adds): {result["flops"] / 1e9:.3f} G ({by_op})\n'
          f'Activations: {result["activations"] / 1e6:.3f} M\n'
          f'Not counted (elementwise by convention): {not_counted or "-"}'
          f'\n{split}')
    python_ops = [k for k in result['not_counted'] if 'PythonOp' in k]
    if python_ops:  # e.g. mmcv's RoIAlign / NMS (sampling, no MACs)
        print('Note: custom autograd functions without a FLOP handle are '
              f'not counted: {python_ops}')
    if result['table']:
        print(result['table'])
    if args.out:
        record = {k: v for k, v in result.items() if k != 'table'}
        record.update(model=kind, input_shape=[1, 3, *shape])
        with open(args.out, 'w') as f:
            json.dump(record, f, indent=2)


if __name__ == '__main__':
    main()
