# Copyright (c) mmlinattn contributors. All rights reserved.
"""Backbones, one file per model family, registered in ``MODELS``."""

__all__ = []
from .flatten_pvt import FLattenPVT, FLattenPVTv2  # noqa: E402
__all__ += ['FLattenPVT', 'FLattenPVTv2']
