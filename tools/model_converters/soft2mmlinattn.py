# Copyright (c) mmlinattn contributors. All rights reserved.
"""Convert official SOFT / SOFT-Norm checkpoints
(https://github.com/fudan-zvg/SOFT, timm-0.3.2 ``CheckpointSaver`` files) to
mmlinattn.

The file is read without running anything it pickles
(:func:`mmlinattn.utils.converter.load_checkpoint`). The EMA weights
(``state_dict_ema``, what the official evaluation uses) are taken when
present, else ``state_dict`` (``--no-ema`` forces it); ``module.`` prefixes
are stripped. The architecture is inferred from the keys (the stage-3 depth
tells SOFT-Small ``[1, 3, 7, 4]`` from the repo's ``[1, 3, 20, 4]``).

SOFT and SOFT-Norm checkpoints have the same keys, so whether the file is
SOFT-Norm comes from what it says about itself (timm's ``arch`` and
``args.model``, e.g. ``soft_norm_tiny``) or, when it says nothing, from
``--norm`` / ``--no-norm`` (required then). ``--norm``/``--no-norm``,
``--arch`` and ``--config`` that disagree with the file are errors. The
converted backbone is loaded strictly into ``SOFT`` (on the meta device)
before anything is written, and ``meta['mmlinattn']`` records family,
``sym_norm`` and arch: a SOFT backbone initialised from the file with the
other ``sym_norm`` warns.

* default (``--to cls``): an mmpretrain ``ImageClassifier`` state dict
  (``backbone.*``, final norm -> ``backbone.norm3``, ``head.fc.*``);
* ``--to det`` / ``--to seg``: ``backbone.*`` only, without the
  classification head and the cls token, for the dense configs
  (``with_cls_token=False``) via ``init_cfg=dict(type='Pretrained',
  checkpoint=..., prefix='backbone.')``.

Example::

    python tools/model_converters/soft2mmlinattn.py SOFT_Tiny_norm.pth \
        checkpoints/soft_tiny_norm_in1k.pth
    python tools/model_converters/soft2mmlinattn.py SOFT_Tiny_norm.pth \
        checkpoints/soft_tiny_norm_in1k_backbone.pth --to det \
        --config configs/detection/retinanet_soft_tiny_1x.py
"""
import argparse
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mmlinattn.models.backbones.soft import (SOFT, convert_soft_official,
                                             infer_soft_arch)
from mmlinattn.utils.converter import (check_strict, count_parameters,
                                       describe_file, file_says,
                                       load_checkpoint, save_converted,
                                       select_weights, source_info,
                                       weights_kind)

# classifier-only parameters, absent with ``with_cls_token=False``
DENSE_DROPPED = ('cls_token', 'cls_pos_embed')
ARCH_KEYS = ('embed_dims', 'num_heads', 'depths')


def zoo_name(arch: dict) -> Optional[str]:
    """The ``SOFT.arch_zoo`` name of ``arch`` (long form), if any."""
    return next((name for name, cfg in SOFT.arch_zoo.items()
                 if len(name) > 1 and cfg == arch), None)


def norm_in_file(said: Mapping[str, str]) -> Optional[Tuple[bool, str]]:
    """(SOFT-Norm or not, the field saying it) from the model names the
    file records (``soft_norm_tiny`` -> Norm, ``soft_tiny`` -> not)."""
    found = {
        where: 'norm' in name.lower().split('_')
        for where, name in said.items() if 'soft' in name.lower()
    }
    if len(set(found.values())) > 1:
        raise ValueError(f'the file contradicts itself: {said}')
    if not found:
        return None
    where = next(iter(found))
    return found[where], f'{where}={said[where]!r} in the file'


def config_backbone(path: str) -> dict:
    """The ``model.backbone`` dict of an mmlinattn SOFT config."""
    from mmengine.config import Config
    backbone = Config.fromfile(path).model.backbone
    if backbone.get('type') not in ('SOFT', 'mmlinattn.SOFT'):
        raise ValueError(f'--config {path}: model.backbone is '
                         f"{backbone.get('type')!r}, not SOFT")
    return dict(backbone)


def resolve_norm(file_norm: Optional[Tuple[bool, str]],
                 stated: List[Tuple[bool, str]]) -> Tuple[bool, str]:
    """``sym_norm`` and who says so; an error when statements disagree or
    nobody says."""
    statements = ([file_norm] if file_norm else []) + stated
    if not statements:
        raise ValueError(
            'the file does not say whether it holds SOFT or SOFT-Norm '
            'weights (no timm arch / args.model); they have the same keys, '
            'so pass --norm (SOFT-Norm) or --no-norm (SOFT)')
    for value, who in statements[1:]:
        if value != statements[0][0]:
            first = statements[0]

            def name(v: bool) -> str:
                return 'SOFT-Norm' if v else 'SOFT'

            raise ValueError(
                f'{first[1]} says {name(first[0])} (sym_norm={first[0]}) but '
                f'{who} says {name(value)} (sym_norm={value})')
    return statements[0]


def check_arch(arch: dict, stated: List[Tuple[object, str]]) -> None:
    """Raise if an ``--arch`` / config arch differs from the keys'."""
    for value, who in stated:
        wanted = SOFT.resolve_arch(value)
        if any(wanted[k] != arch[k] for k in ARCH_KEYS):
            raise ValueError(
                f'{who} says arch {value!r} '
                f'({ {k: wanted[k] for k in ARCH_KEYS} }) but the keys of '
                f'the file give {arch}')


def convert(official: Mapping[str, torch.Tensor],
            to: str = 'cls',
            sym_norm: bool = False
            ) -> Tuple[Dict[str, torch.Tensor], dict, int]:
    """Official state dict -> (mmlinattn state dict, arch settings,
    parameter count); strict against ``SOFT`` on the meta device."""
    arch = infer_soft_arch(official)
    converted = convert_soft_official(official)
    if to == 'cls':
        kwargs = dict(arch=arch, out_type='cls_token')
    else:
        converted = {
            k: v
            for k, v in converted.items()
            if k.startswith('backbone.')
            and k.rsplit('.', 1)[-1] not in DENSE_DROPPED
        }
        kwargs = dict(arch=arch, out_indices=(0, 1, 2, 3),
                      with_cls_token=False)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    model = check_strict(SOFT, backbone, sym_norm=sym_norm, **kwargs)
    return converted, arch, count_parameters(model, converted)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official SOFT / SOFT-Norm checkpoint to '
        'mmlinattn')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output path')
    parser.add_argument(
        '--to',
        choices=['cls', 'det', 'seg'],
        default='cls',
        help='cls: mmpretrain ImageClassifier; det/seg: backbone.* only')
    parser.add_argument(
        '--no-ema',
        action='store_true',
        help="use 'state_dict' even if 'state_dict_ema' exists")
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument(
        '--norm',
        dest='norm',
        action='store_const',
        const=True,
        help='the file holds SOFT-Norm weights (required when the file '
        'does not say)')
    norm.add_argument(
        '--no-norm',
        dest='norm',
        action='store_const',
        const=False,
        help='the file holds SOFT weights (required when the file does not '
        'say)')
    parser.add_argument(
        '--arch', help='expected arch (zoo name); checked against the keys')
    parser.add_argument(
        '--config',
        help='the config the weights are for; its backbone arch and '
        'sym_norm are checked against the file')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    checkpoint = load_checkpoint(args.src)
    keys = ('state_dict', 'model') if args.no_ema else ('state_dict_ema',
                                                        'state_dict', 'model')
    official, source = select_weights(checkpoint, keys)
    said = file_says(checkpoint)
    norm_stated: List[Tuple[bool, str]] = []
    arch_stated: List[Tuple[object, str]] = []
    if args.norm is not None:
        norm_stated.append(
            (args.norm, '--norm' if args.norm else '--no-norm'))
    if args.arch:
        arch_stated.append((args.arch, f'--arch {args.arch}'))
    if args.config:
        backbone = config_backbone(args.config)
        norm_stated.append((bool(backbone.get('sym_norm', False)),
                            f'--config {args.config} (model.backbone.'
                            'sym_norm)'))
        arch_stated.append((backbone.get('arch', 'tiny'),
                            f'--config {args.config} (model.backbone.arch)'))
    sym_norm, norm_source = resolve_norm(norm_in_file(said), norm_stated)
    arch = infer_soft_arch(official)
    check_arch(arch, arch_stated)
    converted, arch, params = convert(official, args.to, sym_norm)
    name = zoo_name(arch)
    family = 'SOFT-Norm' if sym_norm else 'SOFT'
    print(describe_file(args.src, checkpoint))
    print(f'{family} (sym_norm={sym_norm}, from {norm_source}), '
          f'{weights_kind(source)} weights {source!r}: {len(official)} '
          f'tensors, {params / 1e6:.2f}M parameters ({args.to} layout)')
    print(f'arch from the keys: {arch}' +
          (f" (= arch='{name}')" if name else ' (custom arch dict)'))
    if arch['depths'] == [1, 3, 20, 4]:
        print('note: depths [1, 3, 20, 4] = the official repo\'s soft_small '
              "(38.9M), not arch='small' (README 24M, [1, 3, 7, 4]); use the "
              'dict above as arch')
    meta = dict(
        converted_from='fudan-zvg/SOFT',
        source_key=source,
        weights=weights_kind(source),
        official_arch=str(checkpoint.get('arch', '')),
        layout=args.to,
        arch=arch,
        mmlinattn=dict(
            family='SOFT',
            sym_norm=sym_norm,
            arch=name or arch,
            stated_by=norm_source),
        **source_info(args.src))
    save_converted(args.dst, converted, meta)
    print(f'wrote {len(converted)} tensors to {args.dst}; strict load into '
          f"SOFT(sym_norm={sym_norm}): no missing or unexpected keys; use "
          f"arch={name or arch!r}, sym_norm={sym_norm} in the config")


if __name__ == '__main__':
    main()
