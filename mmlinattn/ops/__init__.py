# Copyright (c) mmlinattn contributors. All rights reserved.
"""Compiled ops (``mmlinattn._ext``) with pure-PyTorch references."""
from .ext_loader import ext_available, ext_has_cuda

__all__ = ['ext_available', 'ext_has_cuda']
