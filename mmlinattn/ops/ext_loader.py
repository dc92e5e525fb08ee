# Copyright (c) mmlinattn contributors. All rights reserved.
"""Guarded loader of the compiled extension ``mmlinattn._ext``.

A missing or broken extension never breaks ``import mmlinattn``: every op
falls back to its pure-PyTorch reference.
"""
import os
import warnings
from types import ModuleType
from typing import Optional


def _load() -> Optional[ModuleType]:
    if os.getenv('MMLINATTN_DISABLE_EXT', '0') == '1':
        return None
    try:
        from mmlinattn import _ext
    except ImportError as exc:
        if 'No module named' not in str(exc):
            # Present but not loadable (e.g. built against another torch).
            warnings.warn(f'mmlinattn._ext failed to load ({exc}); using the '
                          'pure-PyTorch ops. Rebuild with '
                          '"pip install --no-build-isolation -e ."')
        return None
    return _ext


ext_module: Optional[ModuleType] = _load()


def ext_available() -> bool:
    """Whether the compiled extension ``mmlinattn._ext`` is loaded."""
    return ext_module is not None


def ext_has_cuda() -> bool:
    """Whether ``mmlinattn._ext`` was compiled with its CUDA kernels."""
    return ext_module is not None and bool(ext_module.has_cuda())
