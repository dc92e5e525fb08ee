# Copyright (c) mmlinattn contributors. All rights reserved.
"""The attention x host matrix: every attention layer in every backbone
skeleton where the combination is meaningful.

Used by ``tools/analysis_tools/attention_matrix.py`` (which writes
``docs/attention_matrix.md``) and by the tests. A pair is *supported* when
the host provides what the attention needs (``host_needs``): Swin's window
attention needs a window size (Swin, LITv2), CSWin's stripes a stripe width
(CSWin); every other attention works in every host.
"""
from typing import Dict, Tuple

import torch.nn as nn

from mmlinattn.registry import MODELS

#: name -> attention config (as passed to a backbone's ``attn_cfg``)
ATTENTIONS: Dict[str, dict] = {
    'softmax': dict(type='SpatialReductionAttention'),
    'window': dict(type='WindowAttention'),
    'cswin': dict(type='CSWinAttention'),
    'focused_linear': dict(type='FocusedLinearAttention'),
    'soft': dict(type='SoftmaxFreeAttention'),
    'soft_norm': dict(type='SoftmaxFreeAttention', sym_norm=True),
    'hilo': dict(type='HiLoAttention'),
    'xnorm': dict(type='XNormAttention'),
    'linear_elu': dict(type='LinearAttention'),
}

#: name -> (backbone type, paper-size arguments, tiny arguments for tests)
HOSTS: Dict[str, Tuple[str, dict, dict]] = {
    'PVT': ('FLattenPVT', dict(arch='tiny'),
            dict(
                arch=dict(
                    embed_dims=[16, 32, 64, 64],
                    depths=[1, 1, 1, 1],
                    num_heads=[1, 2, 2, 4],
                    mlp_ratios=[2, 2, 2, 2]))),
    'Swin': ('FLattenSwin', dict(arch='tiny'),
             dict(
                 arch=dict(
                     embed_dims=16, depths=[1, 1, 2, 1],
                     num_heads=[2, 2, 4, 4]))),
    'CSWin': ('FLattenCSWin', dict(arch='tiny'),
              dict(
                  arch=dict(
                      embed_dims=16, depths=[1, 1, 2, 1],
                      num_heads=[2, 2, 4, 4]))),
    'LITv2': ('LITv2', dict(arch='small'),
              dict(
                  arch=dict(
                      embed_dims=16, depths=[1, 1, 1, 1],
                      num_heads=[2, 2, 4, 4]))),
    'SOFT': ('SOFT', dict(arch='tiny', with_cls_token=False),
             dict(
                 arch=dict(
                     embed_dims=[16, 32, 64, 64],
                     num_heads=[1, 1, 2, 2],
                     depths=[1, 1, 1, 1]),
                 with_cls_token=False)),
    'ViT': ('PlainViT', dict(arch='deit-tiny'),
            dict(arch=dict(embed_dims=32, depth=4, num_heads=2))),
}

_ONLY_IN = {'window': ('Swin', 'LITv2'), 'cswin': ('CSWin', )}


def supported(host: str, attention: str) -> bool:
    """Whether ``host`` provides what ``attention`` needs."""
    return host in _ONLY_IN.get(attention, (host, ))


def build_pair(host: str,
               attention: str,
               tiny: bool = False,
               **kwargs) -> nn.Module:
    """The ``host`` backbone (paper size, or ``tiny``) with ``attention`` in
    every attention block; ``kwargs`` go to the backbone."""
    backbone, paper, small = HOSTS[host]
    cfg = dict(small if tiny else paper, **kwargs)
    return MODELS.build(
        dict(type=backbone, attn_cfg=dict(ATTENTIONS[attention]), **cfg))
