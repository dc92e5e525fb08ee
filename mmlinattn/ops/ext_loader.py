# Copyright (c) mmlinattn contributors. All rights reserved.
"""Guarded loader of the compiled extension ``mmlinattn._ext``.

A missing or broken extension never breaks ``import mmlinattn``: every op
falls back to its pure-PyTorch reference.

Environment variables:
    MMLINATTN_DISABLE_EXT=1   never load the extension.
    MMLINATTN_EXT_PATH=<file> load the extension from this shared library
                              (e.g. a scratch build) instead of the package.
"""
import importlib.util
import os
import sys
import warnings
from types import ModuleType
from typing import ContextManager, Optional

from mmlinattn.utils.switch import ThreadSwitch

_NAME = 'mmlinattn._ext'


def _load_from_file(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f'{path} is not a loadable extension module')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_NAME] = module
    return module


def _load() -> Optional[ModuleType]:
    if os.getenv('MMLINATTN_DISABLE_EXT', '0') == '1':
        return None
    path = os.getenv('MMLINATTN_EXT_PATH')
    try:
        if path:
            return _load_from_file(path)
        if importlib.util.find_spec(_NAME) is None:
            return None  # not built: the pure-PyTorch ops are used
        return importlib.import_module(_NAME)
    except ImportError as exc:
        # Present but not loadable (e.g. built against another torch).
        warnings.warn(f'{_NAME} failed to load ({exc}); using the '
                      'pure-PyTorch ops. Rebuild with '
                      '"pip install --no-build-isolation -e ."')
        return None


ext_module: Optional[ModuleType] = _load()


def ext_available() -> bool:
    """Whether the compiled extension ``mmlinattn._ext`` is loaded."""
    return ext_module is not None


def ext_has_cuda() -> bool:
    """Whether ``mmlinattn._ext`` was compiled with its CUDA kernels."""
    return ext_module is not None and bool(ext_module.has_cuda())


_REFERENCE = ThreadSwitch()


def reference_ops() -> ContextManager[None]:
    """Run the pure-PyTorch references of every op inside the block (this
    thread).

    Example:
        >>> with reference_ops():
        ...     y = gaussian_kernel_matmul(q, l, x)  # never the extension
    """
    return _REFERENCE.turned_on()


def reference_forced() -> bool:
    """Whether :func:`reference_ops` is active in this thread."""
    return bool(_REFERENCE)
