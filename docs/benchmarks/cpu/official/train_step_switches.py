"""The script behind the A/B measurements of single training-step changes in
docs/benchmarks.md (a record of the measurements, not part of the package).

Builds one backbone of the paired harness (``../shared/tools/official_bench``)
on both sides, then alternates, in one process and in the harness's order,
the official training step and ours with some of our changes switched on or
off by patching them in place (every combination of the ``--switch``
names):

* ``bands``: the banded ConvFFN in training (``Mlp.band_rows``);
* ``recompute``: the LayerNorm outputs recomputed in backward
  (``blocks.branch_of_recomputed_norm``);
* ``dwc``: the compiled weight gradient of FLatten's DWC
  (``ops.depthwise_conv2d``; off: plain ``F.conv2d``);
* ``fla``: FLatten's fused focused linear attention kernel
  (``ops.focused_linear_attention``; off: the focusing kernel and batched
  GEMMs);
* ``fla_backward``: its backward kernel
  (``ops.focused_linear_attention_backward``; off: the same composition).

Prints each variant's median step time, its median speed-up over the
official step and the median minor page faults per step
(``getrusage``; glibc's allocator settings come from the environment, e.g.
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``).

    PYTHONPATH=<project> python train_step_switches.py \\
        --harness ../shared/tools/official_bench --src /tmp/official_src \\
        backbone/flatten_pvt_v2_b0 --switch bands recompute --repeats 21
    ... --no-official      # the same without the official model in the loop
    ... --official-only    # the official step alone
    ... --switch --batch 8 # our step as it is, at another batch size
"""
import argparse
import itertools
import os
import resource
import statistics
import sys
import time

import torch

p = argparse.ArgumentParser()
p.add_argument('bench_id')
p.add_argument('--harness', required=True)
p.add_argument('--src', required=True)
p.add_argument('--switch', nargs='*', default=['bands', 'recompute'],
               choices=['bands', 'recompute', 'dwc', 'fla',
                        'fla_backward'])
p.add_argument('--repeats', type=int, default=21)
p.add_argument('--batch', type=int, default=4)
p.add_argument('--no-official', action='store_true')
p.add_argument('--official-only', action='store_true')
a = p.parse_args()
sys.path.insert(0, a.harness)
import paired_train  # noqa: E402

from mmlinattn.models.utils import blocks  # noqa: E402
from mmlinattn.models.utils.ffn import Mlp  # noqa: E402
from mmlinattn.ops import depthwise_conv, focused_linear  # noqa: E402

torch.set_num_threads(2)
plugin = os.path.join(a.harness, 'mmlinattn_plugin.py')
ns = argparse.Namespace(src=a.src, threads=2, batch=a.batch, plugin=[plugin])
ctx, benches = paired_train._benches(ns)
ours = (None if a.official_only else
        paired_train._build_train(ctx, benches[a.bench_id]['mmlinattn'])[1])
official = (None if a.no_official else
            paired_train._build_train(ctx, benches[a.bench_id]['official'])[1])

bands = Mlp.band_rows
recompute = blocks.branch_of_recomputed_norm
compiled_dwc = depthwise_conv._use_compiled


def no_bands(self, x, hw, training):
    return 0 if training else bands(self, x, hw, training)


def plain_norm(branch, norm, x, *args):
    return branch(norm(x), *args)


# name -> patch(on): the change switched on or off
SWITCHES = {
    'bands': lambda on: setattr(Mlp, 'band_rows', bands if on else no_bands),
    'recompute': lambda on: setattr(blocks, 'branch_of_recomputed_norm',
                                    recompute if on else plain_norm),
    'dwc': lambda on: setattr(depthwise_conv, '_use_compiled', compiled_dwc
                              if on else lambda *args: False),
    'fla': lambda on: setattr(focused_linear, '_EXT_HAS_OP', on),
    'fla_backward': lambda on: setattr(focused_linear, '_EXT_HAS_BACKWARD',
                                       on),
}
variants = {
    ', '.join(f'{s} {"on" if on else "off"}'
              for s, on in zip(a.switch, ons)) or 'mmlinattn': ons
    for ons in itertools.product((True, False), repeat=len(a.switch))
}
names = (['official'] if official else []) + ([] if a.official_only else
                                             list(variants))


def run(name):
    if name == 'official':
        return official()
    for switch, on in zip(a.switch, variants[name]):
        SWITCHES[switch](on)
    ours()


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


for name in names:
    run(name)
times = {name: [] for name in names}
page_faults = {name: [] for name in names}
for r in range(a.repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
        f0, t0 = faults(), time.perf_counter()
        run(name)
        times[name].append(time.perf_counter() - t0)
        page_faults[name].append(faults() - f0)
for name in names:
    line = (f'{name:30s} {statistics.median(times[name]) * 1e3:7.1f} ms  '
            f'{statistics.median(page_faults[name]):7.0f} faults / step')
    if official and name != 'official':
        line += '  speed-up over official {:.3f}'.format(statistics.median(
            o / t for o, t in zip(times['official'], times[name])))
    print(line)
