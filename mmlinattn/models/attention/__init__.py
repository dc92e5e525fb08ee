# Copyright (c) mmlinattn contributors. All rights reserved.
"""Attention layers, one file each, registered in ``MODELS``.

Every layer follows the contract of
:mod:`mmlinattn.models.utils.attention_builder`: ``forward(x, hw)`` on a
(B, H*W, C) token grid, host facts by constructor argument name.
"""
from .cswin_attention import CSWinAttention  # noqa: F401
from .focused_linear_attention import FocusedLinearAttention  # noqa: F401
from .hilo_attention import HiLoAttention  # noqa: F401
from .linear_attention import LinearAttention  # noqa: F401
from .soft_attention import SoftmaxFreeAttention  # noqa: F401
from .spatial_reduction_attention import SpatialReductionAttention  # noqa
from .window_attention import WindowAttention  # noqa: F401
from .xnorm_attention import XNormAttention  # noqa: F401

# every layer imported above (one import line per layer)
__all__ = sorted(name for name, obj in list(globals().items())
                 if isinstance(obj, type) and name.endswith('Attention'))
