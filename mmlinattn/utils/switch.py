# Copyright (c) mmlinattn contributors. All rights reserved.
"""A per-thread switch for the ``with ...():`` blocks that turn a fast path
off (``reference_ops``, ``untiled_mlp``, ``blas_gemm``)."""
import threading
from contextlib import contextmanager
from typing import Iterator


class ThreadSwitch:
    """Off by default; :meth:`turned_on` sets it for the block in this
    thread (nested blocks restore the previous state)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self._local, 'on', False)

    @contextmanager
    def turned_on(self) -> Iterator[None]:
        previous = bool(self)
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = previous
