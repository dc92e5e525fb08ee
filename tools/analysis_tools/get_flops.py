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
import json

import torch
from mmengine.config import DictAction

from mmlinattn.utils.benchmarking import analyze
from mmlinattn.utils.model_builder import build_model, parse_shape


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
    model, kind = build_model(
        args.config,
        args.backbone,
        args.arch,
        args.backbone_args,
        args.cfg_options,
        args.backbone_only,
        num_classes=args.num_classes,
        shape=shape)
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
