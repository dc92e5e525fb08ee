# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/train.py, tools/test.py, tools/dist_train.sh and mim on the small
demo data: real runners, real COCO metric, real (gloo) distributed launch,
a killed run resumed from its last checkpoint."""
import glob
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip('mmdet')

DET_CFG = 'configs/detection/retinanet_soft_demo_shapes.py'
# Tiny and quick: no worker processes, 2 images per batch.
FAST = [
    'train_dataloader.batch_size=2',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0',
    'val_dataloader.persistent_workers=False',
    'test_dataloader.num_workers=0',
    'test_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=2',
    'default_hooks.checkpoint.max_keep_ckpts=-1',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool(repo_root, name):
    return osp.join(repo_root, 'tools', name)


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}\n'
        f'{proc.stderr[-5000:]}')
    return proc


def read_log(work_dir):
    logs = sorted(
        osp.join(d, f) for d, _, fs in os.walk(work_dir) for f in fs
        if f.endswith('.log'))
    return '\n'.join(open(p).read() for p in logs)


def test_dist_train_two_gloo_processes(repo_root, demo_workdir,
                                       subprocess_env):
    work_dir = osp.join(demo_workdir, 'dist')
    env = dict(subprocess_env, PORT=str(free_port()))
    run(['bash', tool(repo_root, 'dist_train.sh'),
         osp.join(repo_root, DET_CFG), '2', '--work-dir', work_dir,
         '--cfg-options', 'train_cfg.max_iters=2',
         'train_cfg.val_interval=100'] + FAST, cwd=demo_workdir, env=env)
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    log = read_log(work_dir)
    assert 'Distributed training: True' in log
    assert "'backend': 'gloo'" in log
    ckpt = torch.load(osp.join(work_dir, 'iter_2.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 2


@pytest.mark.parametrize('rank_flag', ['--local_rank', '--local-rank'])
def test_preflight_errors_name_the_fix(repo_root, tmp_path, subprocess_env,
                                       rank_flag):
    # both spellings of the launcher's rank flag parse; the run then stops
    # at the missing data with the command that creates it
    proc = subprocess.run(
        [sys.executable, tool(repo_root, 'train.py'),
         osp.join(repo_root, DET_CFG), '--work-dir', str(tmp_path / 'w'),
         rank_flag, '0'],
        cwd=tmp_path, env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "data_root 'data/demo/coco/' does not exist" in proc.stderr
    assert 'python tools/misc/make_demo_data.py --out data/demo' in \
        proc.stderr
    if rank_flag == '--local-rank':
        return
    if not torch.cuda.is_available():
        proc = subprocess.run(
            [sys.executable, tool(repo_root, 'train.py'),
             osp.join(repo_root, DET_CFG), '--amp'],
            cwd=tmp_path, env=subprocess_env, capture_output=True,
            text=True)
        assert proc.returncode != 0
        assert 'AMP (--amp' in proc.stderr and 'needs a GPU' in proc.stderr
    proc = subprocess.run(
        [sys.executable, tool(repo_root, 'train.py'),
         osp.join(repo_root, DET_CFG), '--cfg-options',
         'model.backbone.type=mmlinattn.SOFTT'],
        cwd=tmp_path, env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Did you mean 'SOFT'?" in proc.stderr


def test_killed_run_resumes_then_test_and_mim_test(repo_root, demo_workdir,
                                                   subprocess_env):
    cfg = osp.join(repo_root, DET_CFG)
    work_dir = osp.join(demo_workdir, 'resume')
    # A long run, killed once its 4th-iteration checkpoint is complete.
    proc = subprocess.Popen(
        [sys.executable, tool(repo_root, 'train.py'), cfg, '--work-dir',
         work_dir, '--cfg-options', 'train_cfg.max_iters=1000',
         'train_cfg.val_interval=1000'] + FAST,
        cwd=demo_workdir, env=subprocess_env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    last = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if osp.isfile(last) and open(last).read().strip().endswith(
                'iter_4.pth'):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
    assert 'iter_4.pth' in saved and 'iter_1000.pth' not in saved

    # --resume (no value) picks up the last checkpoint in the work dir; the
    # full checkpoint (optimizer, message hub) loads under weights_only.
    run([sys.executable, tool(repo_root, 'train.py'), cfg, '--work-dir',
         work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=6',
         'train_cfg.val_interval=6'] + FAST, cwd=demo_workdir,
        env=subprocess_env)
    log = read_log(work_dir)
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'Iter(train) [5/6]' in log
    for it in (2, 4, 6):
        assert osp.isfile(osp.join(work_dir, f'iter_{it}.pth'))
    ckpt_path = osp.join(work_dir, 'iter_6.pth')
    ckpt = torch.load(ckpt_path, map_location='cpu')  # weights_only=True
    assert ckpt['meta']['iter'] == 6 and 'message_hub' in ckpt

    # Without mmlinattn's allow-list the same file fails under weights_only;
    # publish_model.py turns it into a plain file that loads anywhere.
    probe = ('import sys, torch; ckpt = torch.load(sys.argv[1], '
             'map_location="cpu", weights_only=True); '
             'print(sorted(ckpt))')
    bare = subprocess.run([sys.executable, '-c', probe, ckpt_path],
                          capture_output=True, text=True)
    assert bare.returncode != 0 and 'Weights only load failed' in bare.stderr
    published = run([sys.executable,
                     tool(repo_root, 'model_converters/publish_model.py'),
                     ckpt_path, osp.join(demo_workdir, 'pub', 'retina_demo')],
                    cwd=demo_workdir, env=subprocess_env).stdout.strip()
    assert osp.basename(published).startswith('retina_demo_')
    plain = run([sys.executable, '-c', probe, published], cwd=demo_workdir,
                env=subprocess_env)
    assert plain.stdout.strip() == "['meta', 'state_dict']"

    # tools/test.py evaluates it with the real COCO metric (score_thr 0: a
    # 6-iteration model is not confident, but must still yield detections).
    test_dir = osp.join(demo_workdir, 'test')
    run([sys.executable, tool(repo_root, 'test.py'), cfg, ckpt_path,
         '--work-dir', test_dir, '--cfg-options',
         'model.test_cfg.score_thr=0.0'] + FAST,
        cwd=demo_workdir, env=subprocess_env)
    metrics = glob.glob(osp.join(test_dir, '*', '*.json'))  # <ts>/<ts>.json
    assert len(metrics) == 1
    result = json.load(open(metrics[0]))
    assert 0.0 <= result['coco/bbox_mAP'] <= 1.0

    # mim test mmdet runs mmdet's own tools/test.py on our config.
    mim_dir = osp.join(demo_workdir, 'mim_test')
    proc = run(['mim', 'test', 'mmdet', cfg, '--checkpoint', ckpt_path,
                '--work-dir', mim_dir, '--cfg-options',
                'model.test_cfg.score_thr=0.0'] + FAST,
               cwd=demo_workdir, env=subprocess_env)
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr + read_log(mim_dir)
