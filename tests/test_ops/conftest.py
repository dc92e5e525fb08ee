# Copyright (c) mmlinattn contributors. All rights reserved.
"""Fixtures and the ``needs_ext_op`` marker of the op tests."""
import types
from typing import Callable

import pytest

from mmlinattn.ops.ext_loader import ext_module


def pytest_runtest_setup(item):
    """``@pytest.mark.needs_ext_op('name')`` (or a module's ``pytestmark``):
    skip, saying how to build it, when ``mmlinattn._ext`` lacks ``name``."""
    for mark in item.iter_markers('needs_ext_op'):
        if ext_module is None or not hasattr(ext_module, mark.args[0]):
            pytest.skip(f'mmlinattn._ext with {mark.args[0]} is not built '
                        '(pip install --no-build-isolation -e .)')


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

        def counted(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)

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
