# Copyright (c) mmlinattn contributors. All rights reserved.
"""Cross-family attention benchmark: one attention layer at growing token
grids, time and peak memory, forward and forward+backward, CSV + plots.

Layers: every attention we ship -- SOFT and SOFT-Norm
(:class:`SoftmaxFreeAttention`, with the official fixed-stride landmarks
and with ``max_landmarks``), FLatten's :class:`FocusedLinearAttention`,
LITv2's :class:`HiLoAttention`, UFO-ViT's :class:`XNormAttention` -- and
softmax baselines: global MSA on ``F.scaled_dot_product_attention``, Swin
window attention (no shift) and PVT spatial-reduction attention. All get
the same width, heads, batch and input ``(B, H*W, C)``.

Modes: ``forward`` (eval, ``no_grad``, warm-up, median of timed repeats),
``train`` (forward + backward of the output against a fixed random
gradient, train mode) and ``vab``, the protocol of HubHop's
vit-attention-benchmark (train mode, autograd on, no warm-up,
``30 * B / elapsed`` over 30 passes).

Each (layer, grid, mode) runs in its own process: the CPU peak-memory
reading (growth of the resident-set high-water mark, Linux) is then not
disturbed by earlier cases, and running out of memory -- an allocation
failure under the ``--mem-budget`` address-space limit, a CUDA OOM, or the
process being killed -- is recorded as ``oom`` instead of ending the run.
Before a case runs, its time and memory are extrapolated from the two
previous grids of the same layer and mode (power law); cases estimated
beyond ``--time-budget`` or ``--mem-budget`` are recorded as
``skipped (est. ...)``, and so is every larger grid after an ``oom``.

Presets (``--preset``; explicit arguments override them):

* ``vit``: the vit-attention-benchmark setting -- 14x14 tokens, width 768,
  12 heads, batch 64; HiLo window 2, alpha 0.9, Swin window 7, PVT sr 2,
  SOFT stride 2 (49 landmarks at 14x14, as SOFT's stage 3).
* ``scaling``: width 128, 4 heads, batch 1, grids 14x14 ... 200x334 (the
  stride-4 map of an 800x1333 detection input); SOFT stride 8 (its stage
  1) and ``max_landmarks=49`` for the capped variants, PVT sr 8.

Outputs in ``--out-dir``: ``results.csv`` (one row per case),
``scaling.csv`` (fitted exponent k of time ~ N^k per layer and mode over
``--fit-range`` tokens), ``results.md`` (tables), ``time.png`` and
``memory.png`` (log-log, one line per layer), ``meta.json`` (device,
threads, torch, command, load average before and after).

Cases run with glibc malloc told to keep freed memory in the heap
(``MALLOC_CACHE_ENV``; ``--system-malloc`` turns it off): otherwise every
activation above 32 MB is mmap-ed, page-faulted and zeroed afresh on every
call, a cost of the allocator that bends the fitted exponents upward.

Example::

    python tools/analysis_tools/benchmark_attention.py --preset scaling \
        --threads 2 --out-dir work_dirs/attention_scaling
"""
import argparse
import csv
import json
import math
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmlinattn.utils.benchmarking import (PeakMemory, analyze, autocast,
                                          device_name, environment,
                                          fit_exponent, synchronize, time_fn)

Grid = Tuple[int, int]

PRESETS = {
    'vit':
    dict(
        grids=['14x14'],
        embed_dims=768,
        num_heads=12,
        batch_size=64,
        modes=['vab', 'forward', 'train'],
        soft_sr_ratio=2,
        sra_ratio=2),
    'scaling':
    dict(
        grids=[
            '14x14', '28x28', '56x56', '80x134', '100x167', '141x236',
            '200x334'
        ],
        embed_dims=128,
        num_heads=4,
        batch_size=1,
        modes=['forward', 'train'],
        soft_sr_ratio=8,
        sra_ratio=8),
}
DEFAULTS = dict(
    max_landmarks=49,
    window_size=7,
    hilo_window=2,
    hilo_alpha=0.9,
    warmup=3,
    repeat=5,
    vab_passes=30,
    fit_range=[56 * 56, 200 * 334],
    mem_budget=4.,
    time_budget=120.,
    malloc_cache=True)

# glibc malloc serves every block above 32 MB (its largest mmap threshold)
# with a fresh mmap and returns it on free, so each large activation is
# page-faulted and zeroed by the kernel again on every call. That cost grows
# faster than the tensor once it outgrows the caches and bent the fitted
# exponents of linear layers from ~1.05 to ~1.3 at 200x334 on a 2-core EPYC
# (a lone GELU on (66800, 128) took 12.3 ms instead of 3.2 ms). Keeping
# freed memory in the heap, as jemalloc / tcmalloc do, measures the layers.
MALLOC_CACHE_ENV = {
    'MALLOC_MMAP_MAX_': '0',
    'MALLOC_TRIM_THRESHOLD_': str(1 << 40),
}

ATTENTIONS = ('msa', 'window', 'sra', 'soft', 'soft_capped', 'soft_norm',
              'soft_norm_capped', 'flatten', 'hilo', 'xnorm')
MODES = ('forward', 'train', 'vab')

CSV_FIELDS = [
    'attention', 'grid', 'tokens', 'mode', 'status', 'note', 'ms_median',
    'ms_min', 'ms_max', 'img_per_s', 'peak_mem_mb', 'params', 'macs',
    'batch_size', 'embed_dims', 'num_heads', 'dtype', 'device', 'threads'
]


# ------------------------------------------------------------------ layers
class OnGrid(nn.Module):
    """``layer(x, hw)`` (the attention contract) as a one-input module."""

    def __init__(self, layer: nn.Module, hw: Grid):
        super().__init__()
        self.layer = layer
        self.hw = hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, self.hw)


def build_attention(name: str, hw: Grid, opts: Dict) -> nn.Module:
    """Layer ``name`` of :data:`ATTENTIONS` for an ``hw`` token grid."""
    from mmlinattn.models.attention import (FocusedLinearAttention,
                                            HiLoAttention,
                                            SoftmaxFreeAttention,
                                            SpatialReductionAttention,
                                            WindowAttention, XNormAttention)
    C, h = opts['embed_dims'], opts['num_heads']
    if name == 'msa':  # global softmax attention, the baseline
        return OnGrid(SpatialReductionAttention(C, h), hw)
    if name == 'window':
        return OnGrid(WindowAttention(C, h, opts['window_size']), hw)
    if name == 'sra':
        return OnGrid(
            SpatialReductionAttention(C, h, sr_ratio=opts['sra_ratio']), hw)
    if name.startswith('soft'):
        return OnGrid(
            SoftmaxFreeAttention(
                C,
                h,
                sr_ratio=opts['soft_sr_ratio'],
                sym_norm=name.startswith('soft_norm'),
                max_landmarks=opts['max_landmarks']
                if name.endswith('_capped') else None), hw)
    if name == 'flatten':
        return OnGrid(
            FocusedLinearAttention(C, h, key_grid=hw, qkv_layout='qkv'), hw)
    if name == 'hilo':
        return OnGrid(
            HiLoAttention(
                C,
                h,
                window_size=opts['hilo_window'],
                alpha=opts['hilo_alpha']), hw)
    if name == 'xnorm':
        return OnGrid(XNormAttention(C, h), hw)
    raise ValueError(f'unknown attention {name!r}; choose from '
                     f'{ATTENTIONS}')


def describe(name: str, opts: Dict) -> str:
    """One line on the hyper-parameters of ``name``."""
    r, cap = opts['soft_sr_ratio'], opts['max_landmarks']
    return {
        'msa': 'softmax MSA, F.scaled_dot_product_attention',
        'window': f'Swin window attention, window {opts["window_size"]}, '
        'no shift, relative position bias',
        'sra': f'PVT spatial-reduction attention, sr_ratio '
        f'{opts["sra_ratio"]}',
        'soft': f'SOFT, landmark stride {r} (official rule)',
        'soft_capped': f'SOFT, landmark stride {r}, max_landmarks {cap}',
        'soft_norm': f'SOFT-Norm, landmark stride {r} (official rule)',
        'soft_norm_capped': f'SOFT-Norm, stride {r}, max_landmarks {cap}',
        'flatten': 'FLatten focused linear attention, p=3, DWC 5',
        'hilo': f'HiLo, window {opts["hilo_window"]}, alpha '
        f'{opts["hilo_alpha"]}',
        'xnorm': 'UFO-ViT XNorm attention',
    }[name]


# ------------------------------------------------------------------ worker
def _limit_address_space(budget_bytes: float) -> None:
    """Make allocations beyond ``budget_bytes`` more than now fail (Linux)
    instead of pushing the machine into the OOM killer."""
    try:
        with open('/proc/self/status') as f:
            vm = next(
                int(line.split()[1]) * 1024 for line in f
                if line.startswith('VmSize:'))
    except (OSError, StopIteration):
        return
    limit = int(vm + budget_bytes + 2**30)  # 1 GiB for threads and slack
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _is_oom(error: BaseException) -> bool:
    if isinstance(
            error,
            MemoryError) or type(error).__name__ in ('OutOfMemoryError', ):
        return True
    text = str(error).lower()
    return any(
        s in text for s in ('out of memory', "can't allocate memory",
                            'cannot allocate memory', 'failed to allocate'))


def run_case(case: Dict) -> Dict:
    """Time and measure one (layer, grid, mode) in this process."""
    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    torch.manual_seed(0)
    device = torch.device(case['device'])
    hw = tuple(case['hw'])
    mode = case['mode']
    B, C = case['batch_size'], case['embed_dims']
    record = dict(status='ok', note='')
    try:
        layer = build_attention(case['attention'], hw, case).to(device)
        record['params'] = sum(p.numel() for p in layer.parameters())
        layer.train(mode != 'forward')
        x = torch.randn(B, hw[0] * hw[1], C, device=device)
        if mode == 'train':
            x.requires_grad_(True)
            grad = torch.randn_like(x)
        if device.type == 'cpu' and case.get('mem_budget'):
            _limit_address_space(case['mem_budget'] * 2**30)

        def forward():
            with torch.no_grad(), autocast(device, case['dtype']):
                return layer(x)

        def train_step():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            with autocast(device, case['dtype']):
                out = layer(x)
            out.backward(grad.to(out.dtype))

        def vab_pass():
            with autocast(device, case['dtype']):
                return layer(x)

        memory = PeakMemory(device)
        if mode == 'vab':  # no warm-up; 30 passes, time from the first
            memory.reset()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(case['vab_passes']):
                vab_pass()
            synchronize(device)
            seconds = (time.perf_counter() - start) / case['vab_passes']
            timing = dict(median_s=seconds, min_s=seconds, max_s=seconds)
        else:
            timing = time_fn(
                forward if mode == 'forward' else train_step,
                device,
                warmup=case['warmup'],
                repeat=case['repeat'],
                after_warmup=memory.reset)
        peak = memory.peak_bytes()
        record.update(
            ms_median=timing['median_s'] * 1e3,
            ms_min=timing['min_s'] * 1e3,
            ms_max=timing['max_s'] * 1e3,
            img_per_s=B / timing['median_s'],
            peak_mem_mb=None if peak is None else peak / 2**20)
        if mode == 'forward' and case.get('flops'):
            x1 = x[:1].detach()
            record['macs'] = analyze(layer.eval(), (x1, ))['flops']
    except Exception as error:  # noqa: BLE001  (recorded, not raised)
        if not _is_oom(error):
            raise
        record.update(status='oom', note=str(error).splitlines()[0][:120])
    return record


# ------------------------------------------------------------------ driver
def parse_grid(text: str) -> Grid:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'grids are HxW, e.g. 56x56, got {text!r}') from None
    return h, w


def _extrapolate(points: List[Tuple[int, float]],
                 tokens: int,
                 max_k: float,
                 floor: float = 0.) -> Optional[float]:
    """Power-law extrapolation to ``tokens`` from the last two
    (tokens, value) points with values above ``floor`` (below it readings
    are noise); the exponent is clamped to [1, ``max_k``], one point
    assumes ``max_k``."""
    points = [(n, v) for n, v in points if v and v > floor]
    if not points:
        return None
    n1, v1 = points[-1]
    k = max_k
    if len(points) >= 2:
        n0, v0 = points[-2]
        if n1 != n0:
            k = math.log(v1 / v0) / math.log(n1 / n0)
    k = min(max(k, 1.), max_k)
    return v1 * (tokens / n1)**k


def _run_isolated(case: Dict, timeout: float) -> Dict:
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(case)]
    import mmlinattn
    env = dict(os.environ)
    # the worker imports the mmlinattn this process uses
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [
            osp.dirname(osp.dirname(mmlinattn.__file__)),
            env.get('PYTHONPATH')
        ]))
    if case.get('threads'):
        env['OMP_NUM_THREADS'] = str(case['threads'])
    if case.get('malloc_cache'):
        env.update(MALLOC_CACHE_ENV)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(status='timeout', note=f'killed after {timeout:.0f} s')
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode < 0 and -proc.returncode == 9:
        return dict(status='oom', note='killed (SIGKILL, OOM killer?)')
    tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
    return dict(status='error', note=tail[:200])


def _budget_note(measured: List[Tuple[int, float, float]], tokens: int,
                 mode: str, opts: Dict) -> Optional[str]:
    """Why a case would exceed a budget, extrapolated from the measured
    (tokens, ms, MiB) of smaller grids; None if it fits."""
    est_mb = _extrapolate([(n, mb) for n, _, mb in measured],
                          tokens,
                          2.,
                          floor=16.)  # memory: up to an N x N matrix
    if est_mb is not None and est_mb > opts['mem_budget'] * 1024:
        return (f'est. {est_mb / 1024:.1f} GB > budget '
                f'{opts["mem_budget"]:g} GB')
    # time: up to N^3 (SOFT's Newton inverse with m ~ N)
    est_ms = _extrapolate([(n, ms) for n, ms, _ in measured], tokens, 3.)
    # calls of a large case: warm-up, repeats and the MAC-count trace
    calls = (
        opts['vab_passes'] if mode == 'vab' else opts['warmup'] +
        opts['repeat'] + 1)
    if est_ms is not None and est_ms * calls / 1e3 > opts['time_budget']:
        return (f'est. {est_ms * calls / 1e3:.0f} s > budget '
                f'{opts["time_budget"]:g} s')
    return None


def run_benchmark(opts: Dict, log=print) -> List[Dict]:
    """All cases of ``opts``, smallest grid first per layer and mode."""
    rows = []
    common = {
        k: opts[k]
        for k in ('batch_size', 'embed_dims', 'num_heads', 'dtype', 'device',
                  'threads')
    }
    case_opts = {
        k: v
        for k, v in opts.items() if k not in ('attentions', 'grids', 'modes')
    }
    grids = sorted(opts['grids'], key=lambda g: g[0] * g[1])
    for attention in opts['attentions']:
        for mode in opts['modes']:
            measured: List[Tuple[int, float, float]] = []
            stop_note = None
            for hw in grids:
                tokens = hw[0] * hw[1]
                row = dict(
                    attention=attention,
                    grid=f'{hw[0]}x{hw[1]}',
                    tokens=tokens,
                    mode=mode,
                    **common)
                note = stop_note or _budget_note(measured, tokens, mode, opts)
                if note:
                    row.update(status='skipped', note=note)
                else:
                    case = dict(
                        case_opts, attention=attention, hw=hw, mode=mode)
                    row.update(
                        _run_isolated(
                            case, timeout=3 * opts['time_budget'] + 120))
                if row['status'] == 'ok':
                    measured.append(
                        (tokens, row['ms_median'], row.get('peak_mem_mb')
                         or 0.))
                elif row['status'] in ('oom', 'timeout'):
                    stop_note = f'skipped ({row["status"]} at {row["grid"]})'
                log(_format_row(row))
                rows.append(row)
    return rows


def _format_row(row: Dict) -> str:
    text = f'{row["attention"]:>17} {row["grid"]:>8} {row["mode"]:>7}: '
    if row['status'] != 'ok':
        return text + f'{row["status"]} {row.get("note", "")}'
    mem = row.get('peak_mem_mb')
    return text + (f'{row["ms_median"]:10.2f} ms {row["img_per_s"]:10.1f} '
                   f'img/s ' + ('' if mem is None else f'{mem:9.1f} MiB'))


# ----------------------------------------------------------------- outputs
def scaling_rows(rows: List[Dict], fit_range: Sequence[int]) -> List[Dict]:
    out = []
    keys = sorted(
        {(r['attention'], r['mode'])
         for r in rows if r['mode'] != 'vab'},
        key=lambda k: (ATTENTIONS.index(k[0]), k[1]))
    for attention, mode in keys:
        pts = [(r['tokens'], r['ms_median']) for r in rows
               if (r['attention'],
                   r['mode']) == (attention, mode) and r['status'] == 'ok']
        k, n = fit_exponent(pts, *fit_range)
        mac_k, _ = fit_exponent(
            [(r['tokens'], r['macs']) for r in rows
             if (r['attention'], r['mode']) == (attention,
                                                'forward') and r.get('macs')],
            *fit_range)
        covered = [p[0] for p in pts if fit_range[0] <= p[0] <= fit_range[1]]
        out.append(
            dict(
                attention=attention,
                mode=mode,
                k=None if k is None else round(k, 3),
                macs_k=None if mac_k is None else round(mac_k, 3),
                points=n,
                tokens_from=min(covered) if covered else None,
                tokens_to=max(covered) if covered else None))
    return out


def write_csv(path: str, rows: List[Dict], fields: Sequence[str]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({
                k: (f'{v:.4g}' if isinstance(v, float) else v)
                for k, v in row.items()
            })


def markdown_tables(rows: List[Dict], scaling: List[Dict], opts: Dict) -> str:
    grids = sorted({(r['tokens'], r['grid']) for r in rows})
    lines = []
    for mode in opts['modes']:
        for title, key, fmt in (('time per batch (ms)', 'ms_median', '.2f'),
                                ('throughput (img/s)', 'img_per_s', '.1f'),
                                ('peak memory (MiB)', 'peak_mem_mb', '.1f')):
            if mode == 'vab' and key == 'peak_mem_mb':
                continue
            lines += [
                f'\n**{mode}: {title}**\n',
                '| attention | ' + ' | '.join(g for _, g in grids) + ' |',
                '|---|' + '---:|' * len(grids)
            ]
            for attention in opts['attentions']:
                cells = []
                for _, grid in grids:
                    r = next((r for r in rows if r['attention'] == attention
                              and r['mode'] == mode and r['grid'] == grid),
                             None)
                    if r is None:
                        cells.append('')
                    elif r['status'] != 'ok':
                        cells.append(r['status'] +
                                     (f' ({r["note"]})' if r['status'] ==
                                      'skipped' else ''))
                    elif r.get(key) is None:
                        cells.append('n/a')
                    else:
                        cells.append(format(r[key], fmt))
                lines.append(f'| {attention} | ' + ' | '.join(cells) + ' |')
    if any(s['k'] is not None for s in scaling):
        lines += [
            '\n**fitted exponent k (time ~ N^k; MACs ~ N^k_MACs, forward)'
            '**\n', '| attention | mode | k | k_MACs | points | tokens |',
            '|---|---|---:|---:|---:|---|'
        ]
        for s in scaling:
            k, mac_k = ('-' if v is None else f'{v:.2f}'
                        for v in (s['k'], s.get('macs_k')))
            lines.append(f'| {s["attention"]} | {s["mode"]} | {k} | '
                         f'{mac_k} | {s["points"]} | {s["tokens_from"]}-'
                         f'{s["tokens_to"]} |')
    return '\n'.join(lines) + '\n'


def plot(rows: List[Dict], opts: Dict, out_dir: str) -> List[str]:
    """Log-log time and memory vs tokens, one line per layer, one panel per
    mode. Returns the written files."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    modes = [m for m in opts['modes'] if m != 'vab']
    files = []
    if not modes:
        return files
    markers = 'os^vD<>pX*h'
    for key, label, name in (('ms_median', 'time per batch (ms)', 'time'),
                             ('peak_mem_mb', 'peak memory (MiB)', 'memory')):
        fig, axes = plt.subplots(
            1, len(modes), figsize=(6 * len(modes) + 1.5, 4.8), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            for i, attention in enumerate(opts['attentions']):
                pts = sorted(
                    (r['tokens'], r[key]) for r in rows
                    if r['attention'] == attention and r['mode'] == mode
                    and r['status'] == 'ok' and r.get(key))
                if pts:
                    ax.plot(
                        *zip(*pts),
                        marker=markers[i % len(markers)],
                        linestyle='--' if attention in ('msa', 'window',
                                                        'sra') else '-',
                        label=attention)
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xlabel('tokens N = H x W')
            ax.set_ylabel(label)
            ax.set_title(f'{mode}, C={opts["embed_dims"]}, '
                         f'h={opts["num_heads"]}, B={opts["batch_size"]}')
            ax.grid(True, which='both', alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc='center right', fontsize=8)
        fig.suptitle(f'{opts["device_name"]}, {opts["dtype"]}', fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        path = osp.join(out_dir, f'{name}.png')
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


# -------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark attention layers over token grids')
    parser.add_argument('--preset', choices=list(PRESETS), default='scaling')
    parser.add_argument(
        '--attentions',
        nargs='+',
        choices=ATTENTIONS,
        default=list(ATTENTIONS))
    parser.add_argument(
        '--grids', nargs='+', type=parse_grid, help='token grids HxW')
    parser.add_argument('--modes', nargs='+', choices=MODES)
    parser.add_argument('--embed-dims', type=int)
    parser.add_argument('--num-heads', type=int)
    parser.add_argument('--batch-size', type=int)
    parser.add_argument(
        '--soft-sr-ratio', type=int, help='SOFT landmark conv stride')
    parser.add_argument(
        '--max-landmarks',
        type=int,
        help='landmark cap of the *_capped SOFT layers')
    parser.add_argument('--sra-ratio', type=int, help='PVT sr_ratio')
    parser.add_argument('--window-size', type=int, help='Swin window')
    parser.add_argument('--hilo-window', type=int)
    parser.add_argument('--hilo-alpha', type=float)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--dtype', choices=('fp32', 'fp16', 'bf16'), default='fp32')
    parser.add_argument(
        '--threads',
        type=int,
        help='torch threads (and OMP_NUM_THREADS) per case')
    parser.add_argument('--warmup', type=int)
    parser.add_argument('--repeat', type=int)
    parser.add_argument('--vab-passes', type=int)
    parser.add_argument(
        '--mem-budget', type=float, help='GB per case (default 4)')
    parser.add_argument(
        '--time-budget',
        type=float,
        help='seconds per case incl. warm-up (default 120)')
    parser.add_argument(
        '--fit-range',
        type=int,
        nargs=2,
        help='token range of the exponent fit')
    parser.add_argument(
        '--system-malloc',
        action='store_true',
        help='run the cases with glibc malloc\'s default settings instead '
        'of keeping freed memory in the heap (MALLOC_MMAP_MAX_=0, '
        'MALLOC_TRIM_THRESHOLD_=2^40); large activations are then re-faulted '
        'on every call')
    parser.add_argument(
        '--no-flops',
        action='store_true',
        help='skip the MAC count of forward cases')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_attention')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_options(args: argparse.Namespace) -> Dict:
    """Preset, then defaults, then explicit arguments."""
    opts = dict(DEFAULTS, **PRESETS[args.preset])
    for key, value in vars(args).items():
        if value is not None and key not in ('preset', 'worker', 'out_dir',
                                             'no_flops', 'system_malloc'):
            opts[key] = value
    if args.system_malloc:
        opts['malloc_cache'] = False
    opts['grids'] = [
        parse_grid(g) if isinstance(g, str) else tuple(g)
        for g in opts['grids']
    ]
    opts['flops'] = not args.no_flops
    return opts


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return
    opts = resolve_options(args)
    device = torch.device(opts['device'])
    if opts.get('threads'):
        torch.set_num_threads(opts['threads'])
    opts['device_name'] = device_name(device)
    os.makedirs(args.out_dir, exist_ok=True)
    meta = dict(
        environment(device),
        options={
            k: v
            for k, v in opts.items() if k != 'device_name'
        },
        layers={a: describe(a, opts)
                for a in opts['attentions']})
    print(f'{opts["device_name"]}; C={opts["embed_dims"]}, '
          f'h={opts["num_heads"]}, B={opts["batch_size"]}, {opts["dtype"]}')
    rows = run_benchmark(opts)
    scaling = scaling_rows(rows, opts['fit_range'])
    meta['loadavg_after'] = [round(v, 2) for v in os.getloadavg()]
    write_csv(osp.join(args.out_dir, 'results.csv'), rows, CSV_FIELDS)
    write_csv(
        osp.join(args.out_dir, 'scaling.csv'), scaling, [
            'attention', 'mode', 'k', 'macs_k', 'points', 'tokens_from',
            'tokens_to'
        ])
    tables = markdown_tables(rows, scaling, opts)
    with open(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(tables)
    with open(osp.join(args.out_dir, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2)
    files = plot(rows, opts, args.out_dir)
    print(tables)
    print(
        'wrote', ', '.join([
            osp.join(args.out_dir, n)
            for n in ('results.csv', 'scaling.csv', 'results.md', 'meta.json')
        ] + files))


if __name__ == '__main__':
    main()
