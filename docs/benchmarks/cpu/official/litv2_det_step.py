"""The script behind the "official LITv2 detection backbone" row of
docs/benchmarks.md (a record of the measurement, not part of the package).

One training step (train mode, batch 2 at 800x1333, loss = sum of the means
of the outputs, backward; no optimizer) of

* the official LITv2-S detection backbone (ziplab/LITv2
  ``detection/mmdet/models/backbones/litv2.py``, its RetinaNet-S settings,
  out_indices 1-3 like ours), imported from a file outside the project with
  the harness of ``../shared/tools/official_bench`` (timm 0.3.2 stub; its
  CUDA DCN functions replaced by ``torchvision.ops.deform_conv2d``) and a
  stub of ``mmdet.registry``;
* our backbone of ``configs/detection/retinanet_litv2_small_1x.py``.

    git -C <mirror of ziplab/LITv2> show HEAD:detection/mmdet/models/backbones/litv2.py > /tmp/litv2_det.py
    PYTHONPATH=<project> python litv2_det_step.py --harness ../shared/tools/official_bench \
        --src /tmp/official_src --official-file /tmp/litv2_det.py mem official   # then: mem ours
    ... time 4      # 4 alternating pairs in one process, after one warm step each
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types

import torch

ap = argparse.ArgumentParser()
ap.add_argument('--harness', required=True)
ap.add_argument('--src', required=True, help='setup_official.sh output')
ap.add_argument('--official-file', required=True)
ap.add_argument('--project', default=os.path.join(
    os.path.dirname(os.path.abspath(__file__)), *[os.pardir] * 4))
ap.add_argument('mode', choices=('mem', 'time'))
ap.add_argument('arg')
args = ap.parse_args()
sys.path.insert(0, args.harness)
import benchlib  # noqa: E402
import official_loaders  # noqa: E402

torch.set_num_threads(2)


def build(impl: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if impl == 'official':
        registry = types.ModuleType('mmdet.registry')
        registry.MODELS = types.SimpleNamespace(
            register_module=lambda *a, **k: (lambda cls: cls))
        stubs = dict(official_loaders._dcn_function_stubs(),
                     **{'mmdet.registry': registry})
        with official_loaders.official_import_env(
                os.path.join(args.src, 'litv2', 'classification'), stubs):
            spec = importlib.util.spec_from_file_location(
                'official_litv2_det', args.official_file)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        model = module.LITv2(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
            window_size=7, mlp_ratio=4., qkv_bias=True, drop_path_rate=0.2,
            patch_norm=True, out_indices=(1, 2, 3), alpha=0.9,
            local_ws=[0, 0, 2, 1])
    else:
        from mmengine.config import Config

        import mmlinattn  # noqa: F401
        from mmlinattn.registry import MODELS
        config = os.path.join(args.project, 'configs', 'detection',
                              'retinanet_litv2_small_1x.py')
        cfg = Config.fromfile(config).model.backbone.to_dict()
        for key in ('_delete_', 'init_cfg'):
            cfg.pop(key, None)
        cfg['type'] = cfg['type'].split('.')[-1]
        model = MODELS.build(cfg)
    model.train()  # the official train() returns None
    return model


images = torch.randn(2, 3, 800, 1333, generator=torch.Generator().manual_seed(1))


def step(model):
    def run():
        for param in model.parameters():
            param.grad = None
        outs = model(images)
        sum(o.float().mean() for o in outs).backward()
        return [tuple(o.shape) for o in outs]
    return run


if args.mode == 'mem':
    run = step(build(args.arg))
    base = benchlib.rss_mib()
    benchlib.reset_peak_rss()
    start = time.perf_counter()
    shapes = run()
    print(json.dumps(dict(impl=args.arg, first_step_peak_rss_rise_mib=benchlib.peak_rss_mib() - base,
                          first_step_s=time.perf_counter() - start, shapes=shapes)))
else:
    pairs = int(args.arg)
    official, ours = step(build('official')), step(build('ours'))
    official(), ours()
    t_official, t_ours = [], []
    for i in range(pairs):
        order = [(official, t_official), (ours, t_ours)]
        for run, times in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(t_official, t_ours)]
    print(f'official {statistics.median(t_official):.2f} s, ours {statistics.median(t_ours):.2f} s, '
          f'speed-up {statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] over {pairs} pairs')
