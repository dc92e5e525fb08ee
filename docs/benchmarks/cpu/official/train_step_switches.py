"""The script behind the FLatten-PVTv2-B0 note under the paired training
table of docs/benchmarks.md (a record of the measurement, not part of the
package).

Builds one backbone of the paired harness (``../shared/tools/official_bench``)
on both sides, then alternates, in one process and in the harness's order,
the official training step and ours with two of our memory savers switched
on or off by patching them in place: the banded ConvFFN in training
(``Mlp.band_rows``) and the LayerNorm outputs recomputed in backward
(``blocks.branch_of_recomputed_norm``). Prints each variant's median step
time and its median speed-up over the official step.

    PYTHONPATH=<project> python train_step_switches.py \\
        --harness ../shared/tools/official_bench --src /tmp/official_src \\
        backbone/flatten_pvt_v2_b0 --repeats 21
    ... --no-official      # the same without the official model in the loop
"""
import argparse
import os
import statistics
import sys
import time

import torch

p = argparse.ArgumentParser()
p.add_argument('bench_id')
p.add_argument('--harness', required=True)
p.add_argument('--src', required=True)
p.add_argument('--repeats', type=int, default=21)
p.add_argument('--no-official', action='store_true')
a = p.parse_args()
sys.path.insert(0, a.harness)
import paired_train  # noqa: E402

from mmlinattn.models.utils import blocks  # noqa: E402
from mmlinattn.models.utils.ffn import Mlp  # noqa: E402

torch.set_num_threads(2)
plugin = os.path.join(a.harness, 'mmlinattn_plugin.py')
ns = argparse.Namespace(src=a.src, threads=2, batch=4, plugin=[plugin])
ctx, benches = paired_train._benches(ns)
ours = paired_train._build_train(ctx, benches[a.bench_id]['mmlinattn'])[1]
official = (None if a.no_official else
            paired_train._build_train(ctx, benches[a.bench_id]['official'])[1])

bands, recompute = Mlp.band_rows, blocks.branch_of_recomputed_norm


def no_bands(self, x, hw, training):
    return 0 if training else bands(self, x, hw, training)


def plain_norm(branch, norm, x, *args):
    return branch(norm(x), *args)


variants = {'both': (bands, recompute), 'bands only': (bands, plain_norm),
            'recompute only': (no_bands, recompute),
            'neither': (no_bands, plain_norm)}
names = (['official'] if official else []) + list(variants)


def run(name):
    if name == 'official':
        return official()
    Mlp.band_rows, blocks.branch_of_recomputed_norm = variants[name]
    ours()


for name in names:
    run(name)
times = {name: [] for name in names}
for r in range(a.repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
        t0 = time.perf_counter()
        run(name)
        times[name].append(time.perf_counter() - t0)
for name in variants:
    line = f'{name:15s} {statistics.median(times[name]) * 1e3:7.1f} ms'
    if official:
        line += '  speed-up over official {:.3f}'.format(statistics.median(
            o / t for o, t in zip(times['official'], times[name])))
    print(line)
