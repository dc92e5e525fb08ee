# Copyright (c) mmlinattn contributors. All rights reserved.
"""Convert official FLatten Transformer checkpoints to mmlinattn.

Official weights: https://github.com/LeapLabTHU/FLatten-Transformer (PVT,
PVTv2, Swin, CSwin classifiers). The file is read without running anything
it pickles (the official ``main.py`` stores a yacs ``CfgNode``; see
:func:`mmlinattn.utils.converter.load_checkpoint`). The family is recognised
from the keys, the architecture from the converted tensor shapes, and the
result is loaded strictly into that mmlinattn backbone before it is
written.

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
import importlib
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from mmlinattn.utils.converter import (build_on_meta, count_parameters,
                                       describe_file, load_checkpoint,
                                       save_converted, select_weights,
                                       source_info, strict_differences)

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

# --weights: the checkpoint keys it reads, in order ('auto': the model
# weights when present, else the EMA copy of main_ema.py, else any state
# dict)
WEIGHT_KEYS = {
    'auto': ('model', 'state_dict_ema', 'model_ema', 'state_dict'),
    'model': ('model', ),
    'ema': ('state_dict_ema', 'model_ema'),
}


def origin(source: str) -> str:
    """``'model'``, ``'ema'`` or ``'raw'`` for the key weights came from."""
    if source == 'model':
        return 'model'
    return 'ema' if source in WEIGHT_KEYS['ema'] else 'raw'


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


def match_arch(backbone_cls: type,
               backbone_state: Mapping,
               arch: Optional[str] = None) -> Tuple[str, List[str]]:
    """The arch of ``backbone_cls.arch_zoo`` whose parameter names and shapes
    equal ``backbone_state`` (built on the meta device, so cheap), and the
    differences for the closest one when none is exact."""
    if arch is None:  # every arch once, the longest alias naming it
        names: Dict[str, str] = {}
        for name in sorted(backbone_cls.arch_zoo, key=lambda n: -len(n)):
            names.setdefault(repr(backbone_cls.arch_zoo[name]), name)
        candidates = sorted(names.values())
    else:
        candidates = [arch]
    best: Optional[Tuple[str, List[str]]] = None
    for name in candidates:
        problems = strict_differences(
            build_on_meta(backbone_cls, arch=name), backbone_state)
        if not problems:
            return name, []
        if best is None or len(problems) < len(best[1]):
            best = (name, problems)
    return best


def convert(checkpoint: Mapping,
            family: str = 'auto',
            weights: str = 'auto',
            to: str = 'cls',
            arch: Optional[str] = None) -> Tuple[Dict, Dict]:
    """Official checkpoint -> (mmlinattn state dict, meta). Raises
    ``RuntimeError`` listing the differences if the weights do not load
    strictly into any arch of the family."""
    state_dict, source = select_weights(
        checkpoint,
        WEIGHT_KEYS[weights],
        plain=weights == 'auto',
        context='' if weights == 'auto' else f'--weights {weights}: ')
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
    model = build_on_meta(backbone_cls, arch=arch)
    if to in ('det', 'seg'):
        converted = {f'backbone.{k}': v for k, v in backbone_state.items()}
    meta = dict(
        converted_from='LeapLabTHU/FLatten-Transformer',
        mmlinattn_version=importlib.import_module('mmlinattn').__version__,
        family=family,
        backbone=backbone_cls.__name__,
        arch=arch,
        weights=origin(source),
        source_key=source,
        params=count_parameters(model, converted),
        layout='mmpretrain ImageClassifier'
        if to == 'cls' else 'backbone (prefix backbone.)',
        mmlinattn=dict(
            family='FLatten', backbone=backbone_cls.__name__, arch=arch))
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
        choices=sorted(WEIGHT_KEYS),
        help="which weights of the file: 'model', the EMA copy "
        "('state_dict_ema' / 'model_ema'), or 'auto' (model if present, "
        'else EMA)')
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
    checkpoint = load_checkpoint(args.src)
    state_dict, meta = convert(checkpoint, args.family, args.weights, args.to,
                               args.arch)
    meta.update(source_info(args.src))
    print(describe_file(args.src, checkpoint))
    save_converted(args.dst, state_dict, meta)
    print(f"FLatten {meta['backbone']}(arch={meta['arch']!r}) from the "
          f"{meta['weights']} weights ({meta['source_key']!r}): "
          f"{len(state_dict)} tensors, {meta['params'] / 1e6:.2f}M "
          f'parameters, loaded strictly -> {args.dst} ({args.to})')


if __name__ == '__main__':
    main()
