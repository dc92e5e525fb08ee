# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/demo.py: every family has its three demo configs, inheriting the
SOFT ones, and two shrunk classifier runs (3 iterations on the small demo
data) give identical losses and metrics."""
import functools
import glob
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

SHRINK = [
    'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
    'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=3'
]


@functools.lru_cache()
def parse(path: str) -> Config:
    return Config.fromfile(path)


def load_demo(repo_root: str):
    spec = importlib.util.spec_from_file_location(
        'demo', osp.join(repo_root, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('family', ['soft', 'flatten', 'litv2', 'ufo'])
def test_family_configs_swap_only_the_backbone(repo_root, family):
    """Each family's demo configs inherit the SOFT ones: same data,
    schedule, seed and heads; only the backbone (and the channels that
    follow from it) differ, plus LITv2's official 0.01x lr for its DTM
    offset convs (a parameter only that backbone has)."""
    demo = load_demo(repo_root)
    for task in demo.TASKS:
        spec = demo.task_spec(task, family)
        path = osp.join(repo_root, spec['config'])
        with open(path) as f:
            text = f.read()
        cfg = parse(path)
        soft = parse(
            osp.join(repo_root, demo.task_spec(task, 'soft')['config']))
        if family != 'soft':
            assert '_base_' in text and osp.basename(
                soft.filename) in text, path
        assert cfg.randomness == dict(seed=0, deterministic=True)
        optim = cfg.optim_wrapper.to_dict()
        if family == 'litv2':
            keys = optim['paramwise_cfg']['custom_keys']
            assert keys.pop('.conv_offset.weight') == dict(lr_mult=0.01)
            if not keys:
                del optim['paramwise_cfg']['custom_keys']
            if not optim['paramwise_cfg']:
                del optim['paramwise_cfg']
        assert optim == soft.optim_wrapper.to_dict(), path
        for key in ('train_dataloader', 'val_dataloader', 'train_cfg',
                    'param_scheduler'):
            assert cfg[key] == soft[key], (path, key)
        assert cfg.model.backbone.type.split('.')[-1] == {
            'soft': 'SOFT',
            'flatten': 'FLattenPVTv2',
            'litv2': 'LITv2',
            'ufo': 'UFOViT'
        }[family]
        model, base = cfg.model.to_dict(), soft.model.to_dict()
        for m in (model, base):
            del m['backbone']
            m.get('neck', {}).pop('in_channels', None)
            m.get('head', {}).pop('in_channels', None)
        assert model == base, path


def test_every_demo_config_is_a_family_config(repo_root):
    demo = load_demo(repo_root)
    expected = {
        demo.task_spec(task, family)['config']
        for task in demo.TASKS for family in demo.FAMILIES
    }
    found = {
        osp.relpath(p, repo_root)
        for p in glob.glob(osp.join(repo_root, 'configs', '*',
                                    '*demo_shapes.py'))
    }
    assert found == expected


def run_demo(repo_root: str, env: dict, data_root: str,
             work_dir: str) -> dict:
    """Losses per iteration and test metrics of a shrunk classifier run of
    tools/demo.py."""
    cmd = [
        sys.executable, 'tools/demo.py', '--tasks', 'cls', '--data-root',
        data_root, '--work-dir', work_dir, '--no-target-check',
        '--cfg-options'
    ] + SHRINK
    result = subprocess.run(
        cmd, cwd=repo_root, env=env, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[
        -4000:]
    assert 'demo finished' in result.stdout
    scalars = glob.glob(osp.join(work_dir, 'cls', '*', 'vis_data',
                                 'scalars.json'))
    tests = glob.glob(osp.join(work_dir, 'cls', 'test', '*', '*.json'))
    assert len(scalars) == len(tests) == 1, (scalars, tests)
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    with open(tests[0]) as f:
        metrics = json.load(f)
    return dict(
        losses=[{k: r[k]
                 for k in ('iter', 'loss', 'grad_norm')}
                for r in records if 'loss' in r],
        metrics={
            k: v
            for k, v in metrics.items() if k not in ('time', 'data_time')
        })


def test_two_shrunk_demo_runs_are_identical(repo_root, subprocess_env,
                                            demo_data_root, tmp_path):
    """Seeded weights, data order (shuffled sampler, worker seeds) and
    augmentations: the same losses at every iteration and the same top-1."""
    first = run_demo(repo_root, subprocess_env, demo_data_root,
                     str(tmp_path / 'a'))
    second = run_demo(repo_root, subprocess_env, demo_data_root,
                      str(tmp_path / 'b'))
    assert [r['iter'] for r in first['losses']] == [1, 2, 3]
    assert list(first['metrics']) == ['accuracy/top1']
    assert first == second
