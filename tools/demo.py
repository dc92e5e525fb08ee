# Copyright (c) mmlinattn contributors. All rights reserved.
"""End-to-end demo on embedded synthetic data (no downloads, CPU is fine).

1. generates the synthetic shapes datasets if missing
   (``tools/misc/make_demo_data.py``),
2. trains a small classifier of the chosen family (mmpretrain; ``--family``
   soft, flatten, litv2 or ufo) and evaluates top-1,
3. trains a RetinaNet with that backbone (mmdet; backbone initialised from
   the classifier through ``init_cfg`` Pretrained / ``prefix``) and
   evaluates COCO box mAP,
4. trains a Semantic-FPN segmentor with the same backbone (mmseg) and
   evaluates mIoU,
5. plots the loss and metric curves and prints where everything is.

Every step runs ``tools/train.py`` / ``tools/test.py`` exactly as a user
would, with the configs in ``configs/*/*_demo_shapes.py`` (one per family
and task; the other families inherit the SOFT ones and swap the backbone).
The configs fix the seed, the data order and deterministic kernels, so two
runs on the same machine print the same metrics.

    python tools/demo.py                       # SOFT, all three tasks
    python tools/demo.py --family litv2        # LITv2, all three tasks
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
from typing import Any, Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# --family: (config stem, name in the messages)
FAMILIES = {
    'soft': ('soft', 'SOFT'),
    'flatten': ('flatten', 'FLatten-PVTv2'),
    'litv2': ('litv2', 'LITv2'),
    'ufo': ('ufo_vit', 'UFO-ViT'),
}
# task: config pattern (filled with the family's stem), name pattern, ...
TASKS = {
    'cls': dict(
        config='configs/classification/{}_demo_shapes.py',
        metric='accuracy/top1',
        scale=1.0,
        chance=25.0,
        target=50.0,
        name='{} classifier (mmpretrain ImageClassifier)',
        unit='top-1 %'),
    'det': dict(
        config='configs/detection/retinanet_{}_demo_shapes.py',
        metric='coco/bbox_mAP',
        scale=100.0,
        chance=0.0,
        target=10.0,
        name='RetinaNet + {} (mmdet)',
        unit='COCO box mAP %'),
    'seg': dict(
        config='configs/segmentation/fpn_{}_demo_shapes.py',
        metric='mIoU',
        scale=1.0,
        chance=20.0,
        target=40.0,
        name='Semantic FPN + {} (mmseg)',
        unit='mIoU %'),
}


def task_spec(task: str, family: str) -> Dict[str, Any]:
    """``TASKS[task]`` with the config and name of ``family``."""
    stem, name = FAMILIES[family]
    spec = dict(TASKS[task])
    spec['config'] = spec['config'].format(stem)
    spec['name'] = spec['name'].format(name)
    return spec


def run(cmd: List[str], data_root: str) -> None:
    print('\n$ ' + ' '.join(cmd), flush=True)
    env = dict(
        os.environ,
        MMLINATTN_DEMO_DATA=data_root,  # read by the demo configs
        PYTHONPATH=os.pathsep.join(
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


def plot_curves(results: Dict[str, dict], family: str, out_file: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(results), figsize=(4.5 * len(results), 7),
                             squeeze=False)
    for col, (task, res) in enumerate(results.items()):
        spec = task_spec(task, family)
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
    parser.add_argument('--family', default='soft', choices=list(FAMILIES),
                        help='backbone family of all three tasks')
    parser.add_argument('--work-dir',
                        help='default: work_dirs/demo/<family>')
    parser.add_argument('--data-root', default='data/demo',
                        help='demo data (generated there if missing)')
    parser.add_argument('--tasks', nargs='+', default=['cls', 'det', 'seg'],
                        choices=list(TASKS))
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra overrides passed to every train run')
    parser.add_argument('--no-target-check', action='store_true',
                        help='exit 0 even below the demo targets (shrunk '
                        'runs, e.g. with train_cfg.max_iters=...)')
    args = parser.parse_args()
    work_root = osp.abspath(
        osp.join(REPO, args.work_dir or f'work_dirs/demo/{args.family}'))
    data_root = osp.abspath(osp.join(REPO, args.data_root))
    python = sys.executable
    start = time.time()

    if not osp.isfile(osp.join(data_root, 'README.txt')):
        run([python, 'tools/misc/make_demo_data.py', '--out', data_root],
            data_root)

    results: Dict[str, dict] = {}
    cls_ckpt = None
    for task in args.tasks:
        spec = task_spec(task, args.family)
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
        run(cmd, data_root)
        ckpt = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
        run([python, 'tools/test.py', spec['config'], ckpt, '--work-dir',
             osp.join(work_dir, 'test')], data_root)
        metrics = read_test_metrics(osp.join(work_dir, 'test'))
        results[task] = dict(
            checkpoint=ckpt,
            value=metrics[spec['metric']] * spec['scale'],
            scalars=read_scalars(work_dir),
            log=latest(osp.join(work_dir, '*', '*.log')))
        if task == 'cls':
            cls_ckpt = ckpt

    plot_file = osp.join(work_root, 'demo_curves.png')
    plot_curves(results, args.family, plot_file)
    minutes = (time.time() - start) / 60
    print(f'\n==== mmlinattn demo finished in {minutes:.1f} min ====')
    all_above = True
    for task, res in results.items():
        spec = task_spec(task, args.family)
        above = res['value'] >= spec['target']
        all_above &= above
        print(f'{spec["name"]}: {spec["unit"]} = {res["value"]:.2f} '
              f'(chance ~{spec["chance"]:.0f}, demo target >= '
              f'{spec["target"]:.0f}): '
              f'{"OK, clearly above chance" if above else "BELOW TARGET"}'
              f'\n    log:        {res["log"]}'
              f'\n    checkpoint: {res["checkpoint"]}')
    print(f'loss / metric curves: {plot_file}')
    if not all_above and not args.no_target_check:
        sys.exit(1)


if __name__ == '__main__':
    main()
