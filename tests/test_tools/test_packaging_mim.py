# Copyright (c) mmlinattn contributors. All rights reserved.
"""Packaging: a wheel ships ``mmlinattn/.mim`` (configs, tools,
model-index.yml) so ``mim train mmlinattn <config basename>`` works, and
``mim train mmdet <our config>`` works through ``custom_imports``."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mim')

QUICK = [
    'train_cfg.max_iters=1', 'train_cfg.val_interval=100',
    'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'default_hooks.checkpoint.interval=1'
]


def _copy_tracked_tree(repo_root: str, dest: str) -> None:
    """Copy the files git knows about (tracked or new, not ignored), so the
    build does not touch the working tree's mmlinattn/.mim."""
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'], cwd=repo_root,
        capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = osp.join(repo_root, rel)
        if not osp.isfile(src):
            continue
        os.makedirs(osp.dirname(osp.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, osp.join(dest, rel))


@pytest.fixture(scope='module')
def wheel_site(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    _copy_tracked_tree(repo_root, str(src))
    env = dict(os.environ, MMLINATTN_WITH_OPS='0')
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
         '--no-build-isolation', '-w', str(tmp / 'dist'), str(src)],
        check=True, env=env, capture_output=True)
    wheel = next((tmp / 'dist').glob('mmlinattn-*.whl'))
    site = tmp / 'site'
    subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
         '--target', str(site), str(wheel)], check=True,
        capture_output=True)
    return wheel, site


def test_wheel_ships_mim_tree(wheel_site):
    wheel, _ = wheel_site
    names = zipfile.ZipFile(wheel).namelist()
    for required in ('mmlinattn/.mim/model-index.yml',
                     'mmlinattn/.mim/tools/train.py',
                     'mmlinattn/.mim/tools/test.py',
                     'mmlinattn/.mim/tools/dist_train.sh',
                     'mmlinattn/.mim/configs/detection/'
                     'retinanet_soft_demo_shapes.py',
                     # the partial configs the real ones inherit
                     'mmlinattn/.mim/configs/_base_/models/'
                     'in1k_linear_cls.py'):
        assert required in names, required
    assert not any(n.startswith(('tests/', 'configs/', 'tools/'))
                   for n in names)


def test_mim_train_mmlinattn_by_basename(wheel_site, demo_workdir,
                                         subprocess_env):
    _, site = wheel_site
    env = dict(subprocess_env, PYTHONPATH=str(site))
    work_dir = osp.join(demo_workdir, 'mim_pkg')
    proc = subprocess.run(
        ['mim', 'train', 'mmlinattn', 'retinanet_soft_demo_shapes.py',
         '--work-dir', work_dir, '--cfg-options'] + QUICK,
        cwd=demo_workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))
    # the run used the wheel's copy of tools/train.py
    assert str(site) in proc.stdout + proc.stderr


def test_mim_train_mmdet_with_our_config(repo_root, demo_workdir,
                                         subprocess_env):
    work_dir = osp.join(demo_workdir, 'mim_mmdet')
    cfg = osp.join(repo_root, 'configs/detection/'
                   'retinanet_soft_demo_shapes.py')
    proc = subprocess.run(
        ['mim', 'train', 'mmdet', cfg, '--work-dir', work_dir,
         '--cfg-options'] + QUICK,
        cwd=demo_workdir, env=subprocess_env, capture_output=True,
        text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))
    assert 'mmdet/.mim/tools/train.py' in proc.stdout + proc.stderr


@pytest.mark.parametrize('package,config,metric', [
    ('mmpretrain', 'configs/classification/soft_demo_shapes.py',
     'accuracy/top1'),
    ('mmsegmentation', 'configs/segmentation/fpn_soft_demo_shapes.py',
     'mIoU'),
])
def test_mim_train_then_test_other_toolboxes(repo_root, demo_workdir,
                                             subprocess_env, package, config,
                                             metric):
    """The toolbox's own train.py writes a full checkpoint; its own test.py
    loads it (torch>=2.6 weights-only load, allow-listed by mmlinattn
    through the config's custom_imports) and reports the real metric."""
    pytest.importorskip({'mmsegmentation': 'mmseg'}.get(package, package))
    cfg = osp.join(repo_root, config)
    work_dir = osp.join(demo_workdir, package)
    fast = ['train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False']
    proc = subprocess.run(
        ['mim', 'train', package, cfg, '--work-dir', work_dir,
         '--cfg-options', 'train_cfg.max_iters=1',
         'train_cfg.val_interval=100', 'train_dataloader.batch_size=2',
         'default_hooks.checkpoint.interval=1'] + fast,
        cwd=demo_workdir, env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ckpt = osp.join(work_dir, 'iter_1.pth')
    assert osp.isfile(ckpt)
    proc = subprocess.run(
        ['mim', 'test', package, cfg, '--checkpoint', ckpt, '--work-dir',
         osp.join(work_dir, 'test'), '--cfg-options'] + fast,
        cwd=demo_workdir, env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert metric in proc.stdout + proc.stderr
