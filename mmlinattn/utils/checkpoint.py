# Copyright (c) mmlinattn contributors. All rights reserved.
"""Loading mmengine training checkpoints under ``weights_only=True``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True`` and
mmengine 0.10.7 does not pass ``weights_only``, so full training checkpoints
(optimizer state plus the message hub's ``HistoryBuffer`` of numpy arrays)
fail to load for ``--resume``, ``tools/test.py`` and ``mim test``. Rather than
switching the safe unpickler off, we allow-list exactly the classes such
checkpoints contain.
"""
import pickle
from types import FunctionType
from typing import Any, List

import numpy as np
import torch


def _numpy_globals() -> List:
    """numpy objects pickled inside arrays and scalars (numpy 1.x and 2.x)."""
    objs: List = [np.ndarray, np.dtype]
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    objs += [_reconstruct, scalar]
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    if dtypes is not None:
        objs += [
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType') and isinstance(
                getattr(dtypes, name), type)
        ]
    return objs


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling.

    ``HistoryBuffer.__getstate__`` stores its statistics functions, which
    pickle as ``getattr(HistoryBuffer, 'min')``. Allow-listing the real
    ``getattr`` would let a checkpoint reach any attribute of any allowed
    object; this only resolves functions defined on ``HistoryBuffer``.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and not name.startswith('_') and isinstance(
            vars(HistoryBuffer).get(name), FunctionType):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) in a weights-only load: only '
        'HistoryBuffer statistics methods are allowed')


def mmengine_checkpoint_globals() -> List:
    """Every non-tensor global an mmengine 0.10 training checkpoint holds."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')
            ] + _numpy_globals()


def allow_mmengine_checkpoints() -> None:
    """Allow-list the classes of mmengine training checkpoints for
    ``torch.load(weights_only=True)``. Idempotent; called on import."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 has no weights-only default
        return
    add_safe_globals(mmengine_checkpoint_globals())
