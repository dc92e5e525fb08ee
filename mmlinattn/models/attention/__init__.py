# Copyright (c) mmlinattn contributors. All rights reserved.
"""Attention layers, one file each, registered in ``MODELS``."""
from .focused_linear_attention import FocusedLinearAttention

__all__ = []
__all__ += ['FocusedLinearAttention']
from .hilo_attention import HiLoAttention  # noqa: E402
__all__ += ['HiLoAttention']
from .xnorm_attention import XNormAttention  # noqa: E402
__all__ += ['XNormAttention']
from .soft_attention import SoftmaxFreeAttention  # noqa: E402
__all__ += ['SoftmaxFreeAttention']
