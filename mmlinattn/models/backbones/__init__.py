# Copyright (c) mmlinattn contributors. All rights reserved.
"""Backbones, one file per model family, registered in ``MODELS``."""

__all__ = []
from .litv2 import LITv2  # noqa: E402

__all__ += ['LITv2']
from .flatten_pvt import FLattenPVT, FLattenPVTv2  # noqa: E402

__all__ += ['FLattenPVT', 'FLattenPVTv2']
from .soft import SOFT  # noqa: E402

__all__ += ['SOFT']
from .ufo_vit import UFOViT  # noqa: E402

__all__ += ['UFOViT']
from .flatten_swin import FLattenSwin  # noqa: E402

__all__ += ['FLattenSwin']
from .flatten_cswin import FLattenCSWin  # noqa: E402

__all__ += ['FLattenCSWin']
from .plain_vit import PlainViT  # noqa: E402

__all__ += ['PlainViT']
