# Copyright (c) mmlinattn contributors. All rights reserved.
"""Shared fixtures: a small copy of the synthetic demo data and a working
directory in which the configs' relative ``data/demo/...`` roots resolve."""
import os
import os.path as osp
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Small enough for CPU tests, large enough for every split to be non-empty.
SMALL_DEMO_SIZES = {
    'coco': dict(train=16, val=6),
    'ade': dict(training=8, validation=4),
    'imagenet': dict(train=4, val=2),
}


@pytest.fixture(scope='session')
def repo_root() -> str:
    return REPO_ROOT


@pytest.fixture(scope='session')
def demo_data_root(tmp_path_factory) -> str:
    from mmlinattn.utils.demo_data import make_demo_data
    root = str(tmp_path_factory.mktemp('demo_data'))
    make_demo_data(root, seed=0, sizes=SMALL_DEMO_SIZES)
    return root


@pytest.fixture
def demo_workdir(tmp_path, demo_data_root) -> str:
    """A cwd with ``data/demo`` -> the small demo data."""
    os.makedirs(tmp_path / 'data')
    os.symlink(demo_data_root, tmp_path / 'data' / 'demo')
    return str(tmp_path)


@pytest.fixture(scope='session')
def subprocess_env() -> dict:
    """Environment for running tools/*.py in a subprocess with this
    interpreter: the repo on PYTHONPATH, the venv's bin first on PATH."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
    env['PATH'] = os.pathsep.join([osp.dirname(sys.executable),
                                   env.get('PATH', '')])
    env['PYTHON'] = sys.executable
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Restore mmengine's global ``DefaultScope`` after every test.

    A runner or ``init_default_scope`` leaves its scope (e.g. ``mmseg``) as
    the current one for the rest of the process, and every later
    ``Registry.build`` would silently switch to that toolbox's registry; the
    tests must not depend on the order they run in.
    """
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
