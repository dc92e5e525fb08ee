# Copyright (c) mmlinattn contributors. All rights reserved.
"""Shared OpenMMLab backbone behaviour for every mmlinattn family.

Written after mmpretrain's ``SwinTransformer`` discipline: ``arch`` zoos with
exact error messages, ``out_indices`` normalisation, ``frozen_stages``,
``norm_eval``, deprecated ``pretrained=`` turned into ``init_cfg``.
"""
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm


class LinAttnBackbone(BaseModule):
    """Base class: subclasses define ``arch_zoo``, ``essential_keys`` and
    :meth:`_stage_parts`.

    Args:
        out_indices: stages whose features are returned (negative indices
            count from the end).
        frozen_stages: stages ``0..frozen_stages-1`` (and the stem) are put in
            eval mode with ``requires_grad=False``; ``-1`` freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training.
        pretrained: deprecated; a checkpoint path becomes
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: mmengine initialisation config.
    """
    arch_zoo: Dict[str, dict] = {}
    essential_keys: Tuple[str, ...] = ()
    num_stages: int = 4

    def __init__(self,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError('pretrained must be a checkpoint path (str) '
                                f'or None, got {type(pretrained).__name__}')
            if init_cfg is not None:
                raise ValueError('init_cfg and pretrained cannot be set at '
                                 'the same time; use init_cfg only')
            warnings.warn(
                'pretrained is deprecated, use init_cfg=dict(type='
                "'Pretrained', checkpoint=...) instead", DeprecationWarning)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        self.out_indices = self.parse_out_indices(out_indices,
                                                  self.num_stages)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, '
                             f'{self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    # ------------------------------------------------------------------ arch
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Return a copy of the arch settings for a zoo name or custom dict."""
        if isinstance(arch, str):
            arch = arch.lower()
            if arch not in cls.arch_zoo:
                raise ValueError(f'Arch {arch} is not in default archs '
                                 f'{sorted(cls.arch_zoo)}')
            return dict(cls.arch_zoo[arch])
        if not isinstance(arch, dict):
            raise TypeError('arch must be a str or a dict, got '
                            f'{type(arch).__name__}')
        missing = sorted(set(cls.essential_keys) - set(arch))
        if missing:
            raise ValueError(f'Custom arch needs a dict with keys '
                             f'{sorted(cls.essential_keys)}; missing '
                             f'{missing}')
        return dict(arch)

    @staticmethod
    def parse_out_indices(out_indices: Union[int, Sequence[int]],
                          num_stages: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise TypeError('out_indices must be an int or a non-empty '
                            f'sequence of ints, got {out_indices!r}')
        parsed = []
        for index in out_indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices {index} is out of range for '
                                 f'{num_stages} stages (valid: '
                                 f'{-num_stages}..{num_stages - 1})')
            parsed.append(index % num_stages)
        return tuple(sorted(set(parsed)))

    # ------------------------------------------------------------- freezing
    def _stage_parts(self,
                     stage: int) -> Iterable[Union[nn.Module, nn.Parameter]]:
        """Modules and bare parameters that belong to stage ``stage``
        (``-1`` = stem / anything before stage 0)."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for stage in range(-1, self.frozen_stages):
            for part in self._stage_parts(stage):
                if isinstance(part, nn.Parameter):
                    part.requires_grad = False
                    continue
                part.eval()
                for param in part.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'LinAttnBackbone':
        super().train(mode)
        if self.frozen_stages >= 0:
            self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


def tokens_to_nchw(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> contiguous (B, C, H, W) map."""
    B, N, C = x.shape
    H, W = hw
    if N != H * W:
        raise ValueError(f'{N} tokens do not form a {H}x{W} grid')
    return x.transpose(1, 2).reshape(B, C, H, W).contiguous()
