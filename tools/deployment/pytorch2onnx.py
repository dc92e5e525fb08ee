# Copyright (c) mmlinattn contributors. All rights reserved.
"""Export an mmlinattn backbone (or an mmpretrain classifier) to ONNX with
dynamic batch, height and width, and check it against PyTorch with
onnxruntime.

The model comes from a config (its ``model.backbone``, or the whole
``ImageClassifier`` with ``--part model``) or from a registered backbone
type (``LITv2 --arch small``). The export uses ``torch.onnx.export`` with
the ``torch.export``-based exporter when onnxscript is installed, else the
legacy TorchScript tracer with ``dynamic_axes``. Modules that need special
care while exporting switch by themselves under
``torch.onnx.is_in_onnx_export()`` (e.g. LITv2's deformable token merging
becomes ``GridSample`` + ``MatMul``, see ``docs/deployment.md``).

Examples::

    # LITv2-S backbone with converted ImageNet weights, 4 feature maps
    python tools/deployment/pytorch2onnx.py LITv2 --arch small \
        --cfg-options out_indices="(0,1,2,3)" \
        --checkpoint checkpoints/litv2_small_in1k.pth \
        --output-file litv2_small.onnx --verify --verify-shapes 97x131 800x1333
    # the ImageNet classifier of a config (logits)
    python tools/deployment/pytorch2onnx.py \
        configs/classification/litv2_small_8xb128_in1k.py --part model \
        --checkpoint checkpoints/litv2_small_in1k.pth --verify
"""
import argparse
import ast
import importlib.util
import os.path as osp
import sys
import time
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction

from mmlinattn.utils.model_builder import build_model as build_tool_model


class TensorOutputs(nn.Module):
    """Calls a backbone (``model(x)``) or a classifier (``model(x,
    mode='tensor')``) and returns a tuple of tensors."""

    def __init__(self, model: nn.Module, classifier: bool):
        super().__init__()
        self.model = model
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.classifier:
            out = self.model(x, mode='tensor')
        else:
            out = self.model(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out, )


def parse_shape(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'shape {text!r} must look like HxW, e.g. 224x224') from None
    return h, w


def parse_arch(text: str) -> Union[str, dict]:
    return ast.literal_eval(text) if text.lstrip().startswith('{') else text


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export an mmlinattn model to ONNX (dynamic H, W)')
    parser.add_argument(
        'model',
        help='config file, or a registered backbone type (e.g. LITv2)')
    parser.add_argument(
        '--arch',
        type=parse_arch,
        help="backbone arch: a zoo name or a dict literal such as "
        "\"{'embed_dims': 16, 'depths': [1, 1, 1, 1], ...}\" (overrides "
        "the config's model.backbone.arch)")
    parser.add_argument(
        '--part',
        choices=['backbone', 'model'],
        default='backbone',
        help="for configs: export model.backbone (feature maps) or the "
        "whole model ('model': mmpretrain classifiers, logits)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='override settings: for configs key=value pairs of the config '
        '(e.g. model.backbone.out_indices="(0,1,2,3)"), for a type backbone '
        'constructor arguments (e.g. out_indices="(0,1,2,3)")')
    parser.add_argument(
        '--checkpoint',
        help='weights; for --part backbone a classifier/detector checkpoint '
        "also works (its 'backbone.' keys are used)")
    parser.add_argument('--output-file', default='model.onnx')
    parser.add_argument(
        '--shape',
        type=parse_shape,
        default=(224, 224),
        help='example input HxW for tracing (default 224x224)')
    parser.add_argument(
        '--batch',
        type=int,
        default=2,
        help='example batch size (>= 2 keeps '
        'the batch dimension dynamic)')
    parser.add_argument('--in-channels', type=int, default=3)
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument(
        '--exporter',
        choices=['auto', 'dynamo', 'torchscript'],
        default='auto',
        help="'dynamo': torch.export based (needs onnxscript); "
        "'torchscript': the legacy tracer with dynamic_axes; 'auto': dynamo "
        'if onnxscript is installed')
    parser.add_argument(
        '--static', action='store_true', help='fix batch, H and W')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='compare onnxruntime (CPU) with PyTorch; exit 1 on mismatch')
    parser.add_argument(
        '--verify-shapes',
        type=parse_shape,
        nargs='+',
        default=[],
        help='extra HxW sizes to verify (dynamic export only)')
    parser.add_argument('--atol', type=float, default=1e-4)
    parser.add_argument('--rtol', type=float, default=1e-3)
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace) -> nn.Module:
    """The model to export, in eval mode, with ``--checkpoint`` loaded."""
    options = dict(args.cfg_options)
    if not osp.isfile(args.model):  # a registered backbone
        return build_tool_model(
            backbone=args.model,
            arch=args.arch,
            backbone_args=options,
            checkpoint=args.checkpoint)[0]
    if args.part == 'model' and 'Classifier' not in Config.fromfile(
            args.model).model.get('type', ''):
        raise ValueError('--part model exports mmpretrain classifiers only; '
                         'detectors and segmentors need their post-processing '
                         '(use mmdeploy), or export --part backbone')
    return build_tool_model(
        config=args.model,
        arch=args.arch,
        cfg_options=options,
        backbone_only=args.part == 'backbone',
        checkpoint=args.checkpoint,
        tensor_mode=False)[0]


def export(model: nn.Module, args: argparse.Namespace) -> List[str]:
    """Write ``args.output_file``; returns the output names."""
    classifier = hasattr(model, 'extract_feat')
    wrapper = TensorOutputs(model, classifier).eval()
    example = torch.randn(args.batch, args.in_channels, *args.shape)
    with torch.no_grad():
        num_outputs = len(wrapper(example))
    output_names = ['logits'] if classifier else [
        f'feat{i}' for i in range(num_outputs)
    ]
    exporter = args.exporter
    if exporter == 'auto':
        exporter = 'dynamo' if importlib.util.find_spec(
            'onnxscript') else 'torchscript'
    kwargs = dict(
        input_names=['input'],
        output_names=output_names,
        opset_version=args.opset)
    if exporter == 'dynamo':
        if not args.static:
            dim = torch.export.Dim.DYNAMIC
            kwargs['dynamic_shapes'] = ({0: dim, 2: dim, 3: dim}, )
        kwargs['external_data'] = False
    elif not args.static:
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        for name in output_names:
            axes[name] = {
                0: 'batch'
            } if classifier else {
                0: 'batch',
                2: f'{name}_height',
                3: f'{name}_width'
            }
        kwargs['dynamic_axes'] = axes
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (example, ),
            args.output_file,
            dynamo=exporter == 'dynamo',
            **kwargs)
    return output_names


def verify(model: nn.Module, args: argparse.Namespace,
           output_names: List[str]) -> bool:
    """onnxruntime (CPU) vs PyTorch on random inputs of every shape."""
    import onnxruntime as ort
    session = ort.InferenceSession(
        args.output_file, providers=['CPUExecutionProvider'])
    wrapper = TensorOutputs(model, hasattr(model, 'extract_feat')).eval()
    shapes = [args.shape] + ([] if args.static else list(args.verify_shapes))
    batches = [args.batch] if args.static else [args.batch, 1]
    ok = True
    for (h, w), batch in [(s, b) for s in shapes for b in batches]:
        x = torch.randn(batch, args.in_channels, h, w)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(x)]
        start = time.perf_counter()
        try:
            got = session.run(output_names, {'input': x.numpy()})
        except Exception as error:  # onnxruntime raises its own types
            print(f'FAIL {batch}x{h}x{w}: onnxruntime raised '
                  f'{type(error).__name__}: {str(error)[:300]}')
            ok = False
            continue
        ort_ms = (time.perf_counter() - start) * 1000
        for name, e, g in zip(output_names, expected, got):
            if e.shape != g.shape:
                print(f'FAIL {batch}x{h}x{w} {name}: shape {g.shape} != '
                      f'{e.shape}')
                ok = False
                continue
            diff = float(np.abs(e - g).max())
            close = np.allclose(g, e, rtol=args.rtol, atol=args.atol)
            ok &= bool(close)
            print(f"{'ok  ' if close else 'FAIL'} {batch}x{h}x{w} {name} "
                  f'{tuple(g.shape)}: max |onnx - torch| = {diff:.2e}')
        print(f'     onnxruntime {ort_ms:.1f} ms')
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not args.static and args.batch < 2:
        raise SystemExit('--batch must be >= 2 for a dynamic export '
                         '(torch.export specialises size-1 dimensions); use '
                         '--static for a fixed batch of 1')
    model = build_model(args)
    output_names = export(model, args)
    print(f'exported {type(model).__name__} -> {args.output_file} '
          f"({'static' if args.static else 'dynamic batch, H, W'}, opset "
          f'{args.opset}, outputs {output_names})')
    if args.verify and not verify(model, args, output_names):
        print('onnxruntime outputs differ from PyTorch')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
