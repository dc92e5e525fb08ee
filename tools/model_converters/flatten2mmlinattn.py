# Copyright (c) mmlinattn contributors. All rights reserved.
"""Convert official FLatten Transformer checkpoints to mmlinattn.

Official weights: https://github.com/LeapLabTHU/FLatten-Transformer (PVT,
PVTv2, Swin, CSwin classifiers). The family is recognised from the keys, the
architecture from the converted tensor shapes, and the result is loaded
strictly into that mmlinattn backbone before it is written.

Examples::

    # mmpretrain ImageClassifier checkpoint (backbone.* + head.fc.*)
    python tools/model_converters/flatten2mmlinattn.py \
        flatten_pvt_t.pth checkpoints/flatten-pvt-tiny_in1k.pth
    # backbone-only checkpoint for mmdet / mmseg configs
    # (init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.'))
    python tools/model_converters/flatten2mmlinattn.py \
        flatten_swin_t.pth checkpoints/flatten-swin-tiny_backbone.pth --to det

The output is ``{'state_dict': ..., 'meta': {...}}`` with plain tensors and
primitive metadata, so it loads with ``torch.load(weights_only=True)``.
"""
import argparse
import hashlib
import importlib
import os
import os.path as osp
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

# family: (module, converter function, backbone class, a key only the
# official checkpoints of that family contain)
FAMILIES: Dict[str, Tuple[str, str, str, str]] = {
    'pvt': ('mmlinattn.models.backbones.flatten_pvt',
            'convert_flatten_pvt_official', 'FLattenPVT', 'pos_embed1'),
    'pvtv2': ('mmlinattn.models.backbones.flatten_pvt',
              'convert_flatten_pvt_official', 'FLattenPVTv2', 'norm1.weight'),
    'swin': ('mmlinattn.models.backbones.flatten_swin',
             'convert_flatten_swin_official', 'FLattenSwin',
             'layers.0.downsample.reduction.weight'),
    'cswin': ('mmlinattn.models.backbones.flatten_cswin',
              'convert_flatten_cswin_official', 'FLattenCSWin',
              'stage1_conv_embed.0.weight'),
}

WEIGHT_KEYS = {'model': ('model', ), 'ema': ('state_dict_ema', 'model_ema')}


def select_weights(checkpoint: Mapping,
                   weights: str = 'auto') -> Tuple[Dict, str]:
    """The state dict inside an official checkpoint file and its origin
    (``'model'``, ``'ema'`` or ``'raw'``)."""
    if weights == 'auto':
        for origin in ('model', 'ema'):
            for key in WEIGHT_KEYS[origin]:
                if key in checkpoint:
                    return dict(checkpoint[key]), origin
        if 'state_dict' in checkpoint:
            return dict(checkpoint['state_dict']), 'raw'
        if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return dict(checkpoint), 'raw'
        raise KeyError('no weights found: expected one of the keys '
                       "'model', 'state_dict_ema', 'state_dict' or a plain "
                       f'state dict; got keys {sorted(checkpoint)[:10]}')
    for key in WEIGHT_KEYS[weights]:
        if key in checkpoint:
            return dict(checkpoint[key]), weights
    raise KeyError(f'--weights {weights}: none of {WEIGHT_KEYS[weights]} in '
                   f'the checkpoint (keys: {sorted(checkpoint)[:10]})')


def strip_module(state_dict: Mapping) -> Dict:
    return {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state_dict.items()
    }


def detect_family(state_dict: Mapping) -> str:
    found = [
        name for name, (*_, marker) in FAMILIES.items() if marker in state_dict
    ]
    if len(found) != 1:
        raise ValueError(
            'cannot tell the FLatten family of this checkpoint (marker keys '
            f'{ {n: f[-1] for n, f in FAMILIES.items()} } matched {found}); '
            f'pass --family one of {sorted(FAMILIES)}')
    return found[0]


def load_family(family: str) -> Tuple[Callable, type]:
    module_name, converter, backbone, _ = FAMILIES[family]
    module = importlib.import_module(module_name)
    return getattr(module, converter), getattr(module, backbone)


def _shapes(state_dict: Mapping) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def match_arch(backbone_cls: type,
               backbone_state: Mapping,
               arch: Optional[str] = None) -> Tuple[str, List[str]]:
    """The arch of ``backbone_cls.arch_zoo`` whose parameter names and shapes
    equal ``backbone_state`` (built on the meta device, so cheap), and the
    differences for the closest one when none is exact."""
    wanted = _shapes(backbone_state)
    if arch is None:  # every arch once, the longest alias naming it
        names = {}
        for name in sorted(backbone_cls.arch_zoo, key=lambda n: -len(n)):
            names.setdefault(repr(backbone_cls.arch_zoo[name]), name)
        names = sorted(names.values())
    else:
        names = [arch]
    best: Tuple[int, str, List[str]] = (sys.maxsize, '', [])
    for name in names:
        with torch.device('meta'):
            model = backbone_cls(arch=name)
        have = _shapes(model.state_dict())
        problems = [f'missing {k}' for k in sorted(have.keys() - wanted)]
        problems += [f'unexpected {k}' for k in sorted(wanted.keys() - have)]
        problems += [
            f'shape {k}: checkpoint {wanted[k]} vs model {have[k]}'
            for k in sorted(have.keys() & wanted) if have[k] != wanted[k]
        ]
        if not problems:
            return name, []
        if len(problems) < best[0]:
            best = (len(problems), name, problems)
    return best[1], best[2]


def convert(checkpoint: Mapping,
            family: str = 'auto',
            weights: str = 'auto',
            to: str = 'cls',
            arch: Optional[str] = None) -> Tuple[Dict, Dict]:
    """Official checkpoint -> (mmlinattn state dict, meta). Raises
    ``RuntimeError`` listing the differences if the weights do not load
    strictly into any arch of the family."""
    state_dict, origin = select_weights(checkpoint, weights)
    state_dict = strip_module(state_dict)
    if family == 'auto':
        family = detect_family(state_dict)
    converter, backbone_cls = load_family(family)
    converted = converter(state_dict)
    backbone_state = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    arch, problems = match_arch(backbone_cls, backbone_state, arch)
    if problems:
        raise RuntimeError(
            f'the converted weights do not load strictly into '
            f'{backbone_cls.__name__}; closest arch {arch!r} differs in '
            f'{len(problems)} tensors:\n  ' + '\n  '.join(problems[:30]))
    model = backbone_cls(arch=arch)
    model.load_state_dict(backbone_state, strict=True)
    if to in ('det', 'seg'):
        converted = {f'backbone.{k}': v for k, v in backbone_state.items()}
    meta = dict(
        converted_from='LeapLabTHU/FLatten-Transformer',
        mmlinattn_version=importlib.import_module('mmlinattn').__version__,
        family=family,
        backbone=backbone_cls.__name__,
        arch=arch,
        weights=origin,
        layout='mmpretrain ImageClassifier'
        if to == 'cls' else 'backbone (prefix backbone.)')
    return converted, meta


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official FLatten checkpoint to mmlinattn')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output path')
    parser.add_argument(
        '--family',
        default='auto',
        choices=['auto'] + sorted(FAMILIES),
        help='model family (default: recognised from the keys)')
    parser.add_argument(
        '--weights',
        default='auto',
        choices=['auto', 'model', 'ema'],
        help="which weights of the file: 'model', the EMA copy "
        "('state_dict_ema'), or 'auto' (model if present, else EMA)")
    parser.add_argument(
        '--to',
        default='cls',
        choices=['cls', 'det', 'seg'],
        help="'cls': mmpretrain classifier (backbone.* and head.fc.*); "
        "'det' / 'seg': backbone.* only, for Pretrained init_cfg with "
        "prefix='backbone.'")
    parser.add_argument(
        '--arch', help='backbone arch (default: matched from the shapes)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    state_dict, meta = convert(checkpoint, args.family, args.weights, args.to,
                               args.arch)
    with open(args.src, 'rb') as f:
        meta['source_sha256'] = hashlib.sha256(f.read()).hexdigest()
    meta['source_file'] = osp.basename(args.src)
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f"{meta['backbone']}(arch={meta['arch']!r}) from the "
          f"{meta['weights']} weights of {args.src}: {len(state_dict)} "
          f'tensors loaded strictly -> {args.dst} ({args.to})')


if __name__ == '__main__':
    main()
