# Copyright (c) mmlinattn contributors. All rights reserved.
"""Convert official SOFT / SOFT-Norm checkpoints
(https://github.com/fudan-zvg/SOFT, timm-0.3.2 ``CheckpointSaver`` files) to
mmlinattn.

The EMA weights (``state_dict_ema``, what the official evaluation uses) are
taken when present, else ``state_dict`` (``--no-ema`` forces it); ``module.``
prefixes are stripped. The architecture is inferred from the keys (the
stage-3 depth tells SOFT-Small ``[1, 3, 7, 4]`` from the repo's
``[1, 3, 20, 4]``) and printed as the ``arch`` to put in the config; the
converted backbone is loaded strictly into ``SOFT`` (on the meta device)
before anything is written.

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
        checkpoints/soft_tiny_norm_in1k_backbone.pth --to det

The output is ``{'state_dict': ..., 'meta': {...}}`` with plain tensors and
primitive metadata, so it loads with ``torch.load(weights_only=True)``.
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mmlinattn.models.backbones.soft import (SOFT, convert_soft_official,
                                             infer_soft_arch)

DENSE_DROPPED = ('backbone.cls_token', 'backbone.cls_pos_embed')


def select_weights(checkpoint: Mapping,
                   use_ema: bool = True) -> Tuple[Dict[str, torch.Tensor],
                                                  str]:
    """(state dict without ``module.``, the checkpoint key it came from)."""
    keys = ('state_dict_ema', 'state_dict') if use_ema else ('state_dict', )
    source = next((k for k in keys + ('model', ) if k in checkpoint), None)
    if source is not None:
        weights = checkpoint[source]
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        weights, source = checkpoint, '<plain state dict>'
    else:
        raise KeyError("no weights found: expected 'state_dict_ema', "
                       "'state_dict' or a plain state dict; got keys "
                       f'{sorted(checkpoint)[:10]}')
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in weights.items()
    }, source


def zoo_name(arch: dict) -> Optional[str]:
    return next((name for name, cfg in SOFT.arch_zoo.items()
                 if len(name) > 1 and cfg == arch), None)


def strict_differences(backbone: Mapping[str, torch.Tensor],
                       **kwargs) -> List[str]:
    """Missing / unexpected / mis-shaped keys against ``SOFT(**kwargs)``."""
    with torch.device('meta'):
        model = SOFT(**kwargs)
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in backbone.items()}
    problems = [f'missing {k}' for k in sorted(have.keys() - wanted)]
    problems += [f'unexpected {k}' for k in sorted(wanted.keys() - have)]
    problems += [
        f'shape {k}: checkpoint {wanted[k]} vs model {have[k]}'
        for k in sorted(have.keys() & wanted) if have[k] != wanted[k]
    ]
    return problems


def convert(official: Mapping[str, torch.Tensor],
            to: str = 'cls') -> Tuple[Dict[str, torch.Tensor], dict]:
    """Official state dict -> (mmlinattn state dict, arch settings)."""
    arch = infer_soft_arch(official)
    converted = convert_soft_official(official)
    if to == 'cls':
        kwargs = dict(arch=arch, out_type='cls_token')
    else:
        converted = {
            k: v
            for k, v in converted.items()
            if k.startswith('backbone.') and k not in DENSE_DROPPED
        }
        kwargs = dict(arch=arch, out_indices=(0, 1, 2, 3),
                      with_cls_token=False)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    problems = strict_differences(backbone, **kwargs)
    if problems:
        raise RuntimeError(
            f'the converted weights do not load strictly into SOFT({kwargs})'
            f'; {len(problems)} differences:\n  ' + '\n  '.join(problems))
    return converted, arch


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
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    # The official files pickle an argparse.Namespace: trusted input only.
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    official, source = select_weights(checkpoint, use_ema=not args.no_ema)
    converted, arch = convert(official, args.to)
    name = zoo_name(arch)
    print(f'read {len(official)} tensors from {source!r} of {args.src}')
    print(f'inferred arch: {arch}' +
          (f" (= arch='{name}')" if name else ' (custom arch dict)'))
    if arch['depths'] == [1, 3, 20, 4]:
        print('note: depths [1, 3, 20, 4] = the official repo\'s soft_small '
              "(38.9M), not arch='small' (README 24M, [1, 3, 7, 4]); use the "
              'dict above as arch')
    print(f'wrote {len(converted)} tensors ({args.to} layout); strict load '
          'into SOFT: no missing or unexpected keys')
    meta = dict(
        converted_from='fudan-zvg/SOFT',
        source_file=osp.basename(args.src),
        source_key=source,
        official_arch=str(checkpoint.get('arch', '')),
        layout=args.to,
        arch=arch)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': converted, 'meta': meta}, args.dst)


if __name__ == '__main__':
    main()
