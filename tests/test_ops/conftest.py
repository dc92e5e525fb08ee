# Copyright (c) mmlinattn contributors. All rights reserved.
"""Fixtures of the op tests."""
import types
from typing import Callable

import pytest

from mmlinattn.ops.ext_loader import ext_module


class CountingExt:
    """Stands in for ``mmlinattn._ext`` in one op module and counts the
    calls of one of its functions (the others pass through)."""

    def __init__(self, name: str):
        self.calls = 0
        self._name = name

    def __getattr__(self, attr: str):
        function = getattr(ext_module, attr)
        if attr != self._name:
            return function

        def counted(*args):
            self.calls += 1
            return function(*args)

        return counted


@pytest.fixture
def count_ext_calls(
        monkeypatch) -> Callable[[types.ModuleType, str], CountingExt]:
    """``count_ext_calls(module, name)`` replaces ``module.ext_module`` for
    the test and returns the counter of ``name``'s calls."""

    def install(module: types.ModuleType, name: str) -> CountingExt:
        ext = CountingExt(name)
        monkeypatch.setattr(module, 'ext_module', ext)
        return ext

    return install
