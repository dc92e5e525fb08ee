# Copyright (c) mmlinattn contributors. All rights reserved.
"""Eager vs ``torch.compile`` speed of every classification backbone,
paired.

For each backbone one process builds the model once and compiles it once
(``--backend``, default inductor); the compile happens in an untimed
warm-up (its time is reported separately). Then ``--repeat`` rounds each
time one eager and one compiled call of ``--iters`` passes, alternating
which goes first, so that both see the same machine load; the speed-up is
the **median of the per-round ratios** eager / compiled. Modes: ``forward``
(eval, ``torch.no_grad()``) and ``train`` (train mode, forward, a scalar
loss over the outputs, ``backward()``; the gradients are reset between
steps, no optimizer).

Examples::

    python tools/analysis_tools/benchmark_compile.py --threads 2 \
        --shape 224 --batch-size 2 --out-md work_dirs/compile.md
    python tools/analysis_tools/benchmark_compile.py --tiny --shape 64 \
        --backbones SOFT LITv2
"""
import argparse
import json
import time
from typing import Callable, Dict, List

import torch

from mmlinattn.utils.benchmarking import (environment, paired_speedup,
                                         time_paired)

#: the smallest arch of every backbone (a classification model each)
SMALLEST = {
    'SOFT': 'tiny',
    'FLattenPVT': 'tiny',
    'FLattenPVTv2': 'b0',
    'FLattenSwin': 'tiny',
    'FLattenCSWin': 'tiny',
    'LITv2': 'small',
    'UFOViT': 'tiny',
    'PlainViT': 'deit-tiny',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--backbones', nargs='+', default=list(SMALLEST), choices=SMALLEST)
    parser.add_argument(
        '--tiny',
        action='store_true',
        help='the tiny test variants (mmlinattn.testing.TINY_BACKBONES) '
        'instead of the smallest released arch')
    parser.add_argument(
        '--modes', nargs='+', default=['forward', 'train'],
        choices=['forward', 'train'])
    parser.add_argument('--shape', type=int, nargs='+', default=[224])
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--backend', default='inductor')
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--iters', type=int, default=1)
    parser.add_argument('--threads', type=int)
    parser.add_argument('--out', help='JSON with every round')
    parser.add_argument('--out-md', help='markdown table')
    return parser.parse_args()


def build(name: str, tiny: bool):
    from mmlinattn.registry import MODELS
    from mmlinattn.testing import TINY_BACKBONES
    if tiny:
        kwargs = dict(TINY_BACKBONES[name][0])
    else:
        kwargs = dict(arch=SMALLEST[name])
    return MODELS.build(dict(type=name, **kwargs))


def loss_of(outs) -> torch.Tensor:
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    return sum(out.float().square().mean() for out in outs)


def step_fns(model, fn, mode: str, x: torch.Tensor) -> Callable[[], None]:
    if mode == 'forward':

        def step():
            with torch.no_grad():
                fn(x)
    else:

        def step():
            model.zero_grad(set_to_none=True)
            loss_of(fn(x)).backward()

    return step


def bench_one(name: str, args, x: torch.Tensor) -> List[Dict]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build(name, args.tiny)
    compiled = torch.compile(model, backend=args.backend)
    rows = []
    for mode in args.modes:
        model.train(mode == 'train')
        eager = step_fns(model, model, mode, x)
        comp = step_fns(model, compiled, mode, x)
        start = time.perf_counter()
        comp()  # compiles
        compile_s = time.perf_counter() - start
        comp()
        eager()
        times = time_paired({
            'eager': eager,
            'compiled': comp
        }, args.repeat, args.iters)
        rows.append(
            dict(
                backbone=name,
                arch='test-tiny' if args.tiny else SMALLEST[name],
                mode=mode,
                compile_s=compile_s,
                **paired_speedup(times, 'eager', 'compiled'),
                rounds=dict(eager_s=times['eager'],
                            compiled_s=times['compiled'])))
        print(f'{name:13s} {mode:8s} eager {rows[-1]["eager_ms"]:9.1f} ms  '
              f'compiled {rows[-1]["compiled_ms"]:9.1f} ms  speed-up '
              f'{rows[-1]["speedup"]:.2f}x [{rows[-1]["speedup_min"]:.2f}, '
              f'{rows[-1]["speedup_max"]:.2f}]  (compile {compile_s:.0f} s)',
              flush=True)
    return rows


def markdown(rows: List[Dict]) -> str:
    lines = [
        '| backbone | arch | mode | eager ms | compiled ms | speed-up '
        '(median of rounds) | min–max | compile s |',
        '|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        lines.append(f'| {r["backbone"]} | {r["arch"]} | {r["mode"]} | '
                     f'{r["eager_ms"]:.1f} | {r["compiled_ms"]:.1f} | '
                     f'{r["speedup"]:.2f}× | {r["speedup_min"]:.2f}–'
                     f'{r["speedup_max"]:.2f} | {r["compile_s"]:.0f} |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    x = torch.randn(args.batch_size, 3, *shape)
    env = environment(torch.device('cpu'))
    rows = []
    for name in args.backbones:
        rows.extend(bench_one(name, args, x))
    env_end = environment(torch.device('cpu'))
    table = markdown(rows)
    print(table)
    print('load average (1, 5, 15 min) at start',
          env.get('loadavg_1_5_15'), 'at end', env_end.get('loadavg_1_5_15'))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    rows=rows,
                    input_shape=list(x.shape),
                    backend=args.backend,
                    loadavg_end=env_end.get('loadavg_1_5_15'),
                    **env),
                f,
                indent=2)
    if args.out_md:
        with open(args.out_md, 'w') as f:
            f.write(table)


if __name__ == '__main__':
    main()
