# Copyright (c) mmlinattn contributors. All rights reserved.
"""End-to-end demo on embedded synthetic data (no downloads, CPU is fine).

1. generates the synthetic shapes datasets if missing
   (``tools/misc/make_demo_data.py``),
2. trains a small SOFT classifier (mmpretrain) and evaluates top-1,
3. trains a RetinaNet with that SOFT backbone (mmdet; backbone initialised
   from the classifier through ``init_cfg`` Pretrained / ``prefix``) and
   evaluates COCO box mAP,
4. trains a Semantic-FPN segmentor with the same backbone (mmseg) and
   evaluates mIoU,
5. plots the loss and metric curves and prints where everything is.

Every step runs ``tools/train.py`` / ``tools/test.py`` exactly as a user
would, with the configs in ``configs/*/*_demo_shapes.py``.

    python tools/demo.py                       # all three tasks
    python tools/demo.py --tasks det           # RetinaNet only (from scratch)
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

TASKS = {
    'cls': dict(
        config='configs/classification/soft_demo_shapes.py',
        metric='accuracy/top1',
        scale=1.0,
        chance=25.0,
        target=50.0,
        name='SOFT classifier (mmpretrain ImageClassifier)',
        unit='top-1 %'),
    'det': dict(
        config='configs/detection/retinanet_soft_demo_shapes.py',
        metric='coco/bbox_mAP',
        scale=100.0,
        chance=0.0,
        target=10.0,
        name='RetinaNet + SOFT (mmdet)',
        unit='COCO box mAP %'),
    'seg': dict(
        config='configs/segmentation/fpn_soft_demo_shapes.py',
        metric='mIoU',
        scale=1.0,
        chance=20.0,
        target=40.0,
        name='Semantic FPN + SOFT (mmseg)',
        unit='mIoU %'),
}


def run(cmd: List[str]) -> None:
    print('\n$ ' + ' '.join(cmd), flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def latest(pattern: str) -> Optional[str]:
    paths = sorted(glob.glob(pattern), key=osp.getmtime)
    return paths[-1] if paths else None


def read_scalars(work_dir: str) -> List[dict]:
    path = latest(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    if path is None:
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    path = latest(osp.join(work_dir, '*', '*.json'))
    if path is None:
        raise RuntimeError(f'no test metrics found under {work_dir}')
    with open(path) as f:
        return json.load(f)


def plot_curves(results: Dict[str, dict], out_file: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(results), figsize=(4.5 * len(results), 7),
                             squeeze=False)
    for col, (task, res) in enumerate(results.items()):
        spec = TASKS[task]
        records = res['scalars']
        train = [r for r in records if 'loss' in r]
        axes[0, col].plot([r['iter'] for r in train],
                          [r['loss'] for r in train])
        axes[0, col].set_title(f'{spec["name"]}\ntraining loss', fontsize=9)
        axes[0, col].set_xlabel('iteration')
        val = [r for r in records if spec['metric'] in r]
        steps = [r.get('step', r.get('iter')) for r in val]
        axes[1, col].plot(steps, [r[spec['metric']] * spec['scale']
                                  for r in val], marker='o')
        axes[1, col].axhline(spec['chance'], color='grey', ls='--',
                             label='chance')
        axes[1, col].set_title(f'validation {spec["unit"]}', fontsize=9)
        axes[1, col].set_xlabel('iteration')
        axes[1, col].legend()
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--tasks', nargs='+', default=['cls', 'det', 'seg'],
                        choices=list(TASKS))
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra overrides passed to every train run')
    args = parser.parse_args()
    work_root = osp.abspath(osp.join(REPO, args.work_dir))
    data_root = osp.join(REPO, args.data_root)
    python = sys.executable
    start = time.time()

    if not osp.isfile(osp.join(data_root, 'README.txt')):
        run([python, 'tools/misc/make_demo_data.py', '--out', data_root])

    results: Dict[str, dict] = {}
    cls_ckpt = None
    for task in args.tasks:
        spec = TASKS[task]
        work_dir = osp.join(work_root, task)
        options = list(args.cfg_options)
        if task != 'cls' and cls_ckpt is not None:
            # Transfer the classifier's backbone, as with ImageNet weights.
            options += [
                'model.backbone.init_cfg.type=Pretrained',
                f'model.backbone.init_cfg.checkpoint={cls_ckpt}',
                'model.backbone.init_cfg.prefix=backbone.'
            ]
        cmd = [python, 'tools/train.py', spec['config'], '--work-dir',
               work_dir]
        if options:
            cmd += ['--cfg-options'] + options
        run(cmd)
        ckpt = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
        run([python, 'tools/test.py', spec['config'], ckpt, '--work-dir',
             osp.join(work_dir, 'test')])
        metrics = read_test_metrics(osp.join(work_dir, 'test'))
        results[task] = dict(
            checkpoint=ckpt,
            value=metrics[spec['metric']] * spec['scale'],
            scalars=read_scalars(work_dir),
            log=latest(osp.join(work_dir, '*', '*.log')))
        if task == 'cls':
            cls_ckpt = ckpt

    plot_file = osp.join(work_root, 'demo_curves.png')
    plot_curves(results, plot_file)
    minutes = (time.time() - start) / 60
    print(f'\n==== mmlinattn demo finished in {minutes:.1f} min ====')
    all_above = True
    for task, res in results.items():
        spec = TASKS[task]
        above = res['value'] >= spec['target']
        all_above &= above
        print(f'{spec["name"]}: {spec["unit"]} = {res["value"]:.1f} '
              f'(chance ~{spec["chance"]:.0f}, demo target >= '
              f'{spec["target"]:.0f}): '
              f'{"OK, clearly above chance" if above else "BELOW TARGET"}'
              f'\n    log:        {res["log"]}'
              f'\n    checkpoint: {res["checkpoint"]}')
    print(f'loss / metric curves: {plot_file}')
    if not all_above:
        sys.exit(1)


if __name__ == '__main__':
    main()
