# Copyright (c) mmlinattn contributors. All rights reserved.
"""Convert official LITv2 checkpoints (https://github.com/ziplab/LITv2) to
mmlinattn.

* ImageNet classifiers (``litv2_{s,m,b,b_384}.pth``, also the ``alpha_*.pth``
  sweep of release v1.1): written as an mmpretrain ``ImageClassifier`` state
  dict (``backbone.*``, final norm -> ``backbone.norm3``, ``head.fc.*``) or,
  with ``--to det|seg``, as ``backbone.*`` only (no output norms: the
  official dense code initialises ``norm1..3`` / ``norm0..3`` freshly) for
  ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
* Detection / segmentation checkpoints (``retinanet_litv2_*``,
  ``mask_rcnn_litv2_*``, ``litv2_*_fpn_r50_512x512_80k_ade20k.pth``): our
  module names equal the official ones, so the whole model state dict is
  kept (use it as ``load_from``); the backbone part is checked.

The architecture (and the HiLo head split ``alpha``, and whether a
``norm0`` exists) is recognised from the tensor shapes; the backbone weights
are loaded strictly into ``LITv2`` on the meta device before anything is
written. ``local_ws`` leaves no trace in the weights: use the ``*_ws4``
configs for the ``*_ws_4.pth`` checkpoints.

Examples::

    python tools/model_converters/litv22mmlinattn.py litv2_s.pth \
        checkpoints/litv2_small_in1k.pth
    python tools/model_converters/litv22mmlinattn.py litv2_s.pth \
        checkpoints/litv2_small_in1k_backbone.pth --to det
    python tools/model_converters/litv22mmlinattn.py \
        retinanet_litv2_s_fpn_1x_coco.pth checkpoints/retinanet_litv2_small.pth

The output is ``{'state_dict': ..., 'meta': {...}}`` with plain tensors and
primitive metadata, so it loads with ``torch.load(weights_only=True)``.
"""
import argparse
import hashlib
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mmlinattn.models.backbones.litv2 import LITv2, convert_litv2_official

# Alphas of the released models, tried first so the reported value is the
# one of the official config (int() truncation makes several equivalent).
OFFICIAL_ALPHAS = (0.9, 0.5, 0.0, 0.2, 0.4, 0.7, 1.0)


def select_weights(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint file (classification:
    ``'model'``; mmdet/mmseg: ``'state_dict'``; or a bare state dict)."""
    for key in ('model', 'state_dict'):
        if key in checkpoint:
            return dict(checkpoint[key])
    if checkpoint and all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    raise KeyError("no weights found: expected 'model', 'state_dict' or a "
                   f'plain state dict; got keys {sorted(checkpoint)[:10]}')


def infer_backbone_args(backbone: Mapping[str, torch.Tensor]) -> Dict:
    """LITv2 constructor arguments whose parameters have these shapes."""
    dims = [
        backbone[f'layers.{i}.blocks.0.mlp.fc1.weight'].shape[1]
        for i in range(4)
    ]
    depths = [
        len({k.split('.')[3]
             for k in backbone if k.startswith(f'layers.{i}.blocks.')})
        for i in range(4)
    ]
    arch = next((name for name, cfg in LITv2.arch_zoo.items()
                 if len(name) > 1 and cfg['depths'] == depths
                 and cfg['embed_dims'] == dims[0]), None)
    if arch is None:
        raise ValueError(f'no LITv2 arch has embed_dims {dims[0]} and depths '
                         f'{depths}')
    heads = LITv2.arch_zoo[arch]['num_heads'][2]
    head_dims = dims[2] // heads
    l_q = backbone.get('layers.2.blocks.0.attn.l_q.weight')
    lofi_heads = 0 if l_q is None else l_q.shape[0] // head_dims
    alpha = next((a for a in OFFICIAL_ALPHAS if int(heads * a) == lofi_heads),
                 lofi_heads / heads + 1e-9)
    out_indices = tuple(i for i in range(4) if f'norm{i}.weight' in backbone)
    return dict(
        arch=arch,
        alpha=alpha,
        out_indices=out_indices or (3, ),
        with_stage0_norm='norm0.weight' in backbone)


def check_strict(backbone: Mapping[str, torch.Tensor], kwargs: Dict) -> None:
    """Raise with the differences unless ``backbone`` loads strictly into
    ``LITv2(**kwargs)`` (built on the meta device)."""
    with torch.device('meta'):
        model = LITv2(**kwargs)
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in backbone.items()}
    problems: List[str] = [
        f'missing {k}' for k in sorted(have.keys() - wanted)
    ]
    problems += [f'unexpected {k}' for k in sorted(wanted.keys() - have)]
    problems += [
        f'shape {k}: checkpoint {wanted[k]} vs model {have[k]}'
        for k in sorted(have.keys() & wanted) if have[k] != wanted[k]
    ]
    if problems:
        raise RuntimeError(
            f'the converted weights do not load strictly into LITv2('
            f'{kwargs}); {len(problems)} differences:\n  ' +
            '\n  '.join(problems[:30]))


def convert(checkpoint: Mapping,
            to: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Official checkpoint -> (mmlinattn state dict, primitive meta)."""
    converted = convert_litv2_official(select_weights(checkpoint))
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    dense = any(not k.startswith(('backbone.', 'head.fc.'))
                for k in converted)
    kwargs = infer_backbone_args(backbone)
    check_strict(backbone, kwargs)
    if dense:
        if to == 'cls':
            raise ValueError('a detection/segmentation checkpoint cannot be '
                             'written as a classifier')
        layout = 'full model (load_from)'
    elif to in ('det', 'seg'):
        converted = {
            f'backbone.{k}': v
            for k, v in backbone.items() if not k.startswith('norm')
        }
        kwargs.pop('out_indices')
        layout = "backbone (init_cfg prefix='backbone.')"
    else:
        layout = 'mmpretrain ImageClassifier'
    meta = dict(
        converted_from='ziplab/LITv2',
        backbone='LITv2',
        layout=layout,
        **{k: list(v) if isinstance(v, tuple) else v
           for k, v in kwargs.items()})
    return dict(converted), meta


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official LITv2 checkpoint to mmlinattn')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output path')
    parser.add_argument(
        '--to',
        choices=['cls', 'det', 'seg'],
        help="for ImageNet checkpoints: 'cls' (default) writes an mmpretrain "
        "classifier (backbone.* and head.fc.*), 'det' / 'seg' the backbone "
        "only for Pretrained init_cfg with prefix='backbone.'. Detection and "
        'segmentation checkpoints are always written whole')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    # Official files pickle more than tensors (argparse/yacs objects).
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    state_dict, meta = convert(checkpoint, args.to)
    with open(args.src, 'rb') as f:
        meta['source_sha256'] = hashlib.sha256(f.read()).hexdigest()
    meta['source_file'] = osp.basename(args.src)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    extra = ', with_stage0_norm=True' if meta['with_stage0_norm'] else ''
    print(f"LITv2(arch={meta['arch']!r}, alpha={meta['alpha']}{extra}): "
          f'{len(state_dict)} tensors, backbone loaded strictly -> '
          f"{args.dst} ({meta['layout']})")


if __name__ == '__main__':
    main()
