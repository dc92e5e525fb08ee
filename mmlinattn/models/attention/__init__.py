# Copyright (c) mmlinattn contributors. All rights reserved.
"""Attention layers, one file each, registered in ``MODELS``.

Every layer follows the contract of
:mod:`mmlinattn.models.utils.attention_builder`: ``forward(x, hw)`` on a
(B, H*W, C) token grid, host facts by constructor argument name.
"""
from .cswin_attention import CSWinAttention
from .focused_linear_attention import FocusedLinearAttention
from .hilo_attention import HiLoAttention
from .soft_attention import SoftmaxFreeAttention
from .spatial_reduction_attention import SpatialReductionAttention
from .window_attention import WindowAttention
from .xnorm_attention import XNormAttention

__all__ = [
    'CSWinAttention', 'FocusedLinearAttention', 'HiLoAttention',
    'SoftmaxFreeAttention', 'SpatialReductionAttention', 'WindowAttention',
    'XNormAttention'
]
