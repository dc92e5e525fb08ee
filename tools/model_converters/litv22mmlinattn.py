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

The file is read without running anything it pickles (the official
``main.py`` stores a yacs ``CfgNode``, mmdet/mmseg files their ``meta``;
see :func:`mmlinattn.utils.converter.load_checkpoint`). The architecture
(and the HiLo head split ``alpha``, and whether a
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
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from mmlinattn.models.backbones.litv2 import LITv2, convert_litv2_official
from mmlinattn.utils.converter import (check_strict, count_parameters,
                                       describe_file, load_checkpoint,
                                       save_converted, select_weights,
                                       source_info, weights_kind)

# Alphas of the released models, tried first so the reported value is the
# one of the official config (int() truncation makes several equivalent).
OFFICIAL_ALPHAS = (0.9, 0.5, 0.0, 0.2, 0.4, 0.7, 1.0)
# classification: 'model'; mmdet / mmseg: 'state_dict'
WEIGHT_KEYS = ('model', 'state_dict')


def official_backbone(
        weights: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The backbone tensors of an official state dict under their official
    names (``layers.*``; ``backbone.`` dropped from dense files, the
    classifier's final ``norm`` as ``norm3``)."""
    if any(k.startswith('backbone.') for k in weights):
        return {
            k[len('backbone.'):]: v
            for k, v in weights.items() if k.startswith('backbone.')
        }
    return {('norm3.' + k[len('norm.'):] if k.startswith('norm.') else k): v
            for k, v in weights.items() if not k.startswith('head.')}


def infer_backbone_args(backbone: Mapping[str, torch.Tensor]) -> Dict:
    """LITv2 constructor arguments whose parameters have these shapes
    (``backbone`` in the official names, see :func:`official_backbone`)."""
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


def convert(checkpoint: Mapping,
            to: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Official checkpoint -> (mmlinattn state dict, primitive meta)."""
    weights, source = select_weights(checkpoint, WEIGHT_KEYS)
    converted = convert_litv2_official(weights)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    }
    dense = any(not k.startswith(('backbone.', 'head.fc.'))
                for k in converted)
    kwargs = infer_backbone_args(official_backbone(weights))
    model = check_strict(LITv2, backbone, **kwargs)
    params = count_parameters(model, converted)
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
        source_key=source,
        weights=weights_kind(source),
        params=params,
        mmlinattn=dict(
            family='LITv2', arch=kwargs['arch'], alpha=kwargs['alpha']),
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
    checkpoint = load_checkpoint(args.src)
    state_dict, meta = convert(checkpoint, args.to)
    meta.update(source_info(args.src))
    print(describe_file(args.src, checkpoint))
    save_converted(args.dst, state_dict, meta)
    extra = ', with_stage0_norm=True' if meta['with_stage0_norm'] else ''
    print(f"LITv2(arch={meta['arch']!r}, alpha={meta['alpha']}{extra}) from "
          f"the {meta['weights']} weights ({meta['source_key']!r}): "
          f"{len(state_dict)} tensors, {meta['params'] / 1e6:.2f}M "
          f'parameters, backbone loaded strictly -> {args.dst} '
          f"({meta['layout']})")


if __name__ == '__main__':
    main()
