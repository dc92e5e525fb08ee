# Copyright (c) mmlinattn contributors. All rights reserved.
"""Benchmark of the Gaussian-kernel ops: time and peak memory of SOFT's
kernel products ``K (K^T v)``, ``K = exp(-||q_i - l_j||^2 / 2)``, for
q, v (B, h, N, d) and landmarks l (B, h, M, d), in three implementations:

* ``reference``: the PyTorch formulation of the official torch path:
  ``K = exp(-(|q|^2 + |l|^2 - 2 q l^T) / 2)`` materialised, then two
  matmuls (autograd keeps the N x M tensors for the backward);
* ``extension``: K from the compiled ``gaussian_kernel`` (exact distances,
  exp fused), then the same two matmuls;
* ``fused``: ``gaussian_kernel_matmul(q, l, gaussian_kernel_t_matmul(q, l,
  v))``, which never materialises K (memory O((N + M) d)).

Modes: ``forward`` (``no_grad``) and ``forward+backward`` (gradients of
q, l and v against a fixed random output gradient). Time is the median of
``--repeat`` runs after ``--warmup`` runs. Peak memory is measured after
the warm-up, over the inputs: the growth of ``torch.cuda.max_memory_allocated``
on CUDA, and on CPU (Linux) the growth of the resident-set high-water mark of
a fresh process per case, with glibc's mmap threshold fixed so that freed
tensors leave the resident set at once. A case that fails to allocate is
recorded as ``oom``, one that exceeds ``--time-budget`` seconds as
``timeout``, and reference/extension cases whose N x M tensors would exceed
``--mem-budget`` GiB as ``skipped``. Run it from the repository root with
mmlinattn installed (or ``PYTHONPATH=.``).

Outputs in ``--out-dir``: ``results.md`` (the table printed at the end),
``results.json`` and ``benchmark_ops.png`` (time and memory against N).

Example::

    python tools/analysis_tools/benchmark_ops.py --devices cpu cuda \
        --out-dir work_dirs/benchmark_ops
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

IMPLS = ('reference', 'extension', 'fused')
MODES = ('forward', 'forward+backward')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--devices',
        nargs='+',
        default=['cpu', 'cuda'],
        choices=['cpu', 'cuda'],
        help='devices (cuda is skipped when none is visible)')
    parser.add_argument(
        '--n',
        type=int,
        nargs='+',
        default=[3136, 12544, 66800],
        help='query tokens: SOFT stage 1 at 224^2, 448^2, '
        'and 800x1333 / 4')
    parser.add_argument(
        '--m',
        type=int,
        nargs='+',
        default=[49, 1000],
        help='landmarks: 49 at 224^2, ~1000 at 800x1333')
    parser.add_argument('--d', type=int, default=32, help='head dim')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--heads', type=int, default=2, help='SOFT stage 1 has 2 heads')
    parser.add_argument(
        '--impls', nargs='+', default=list(IMPLS), choices=IMPLS)
    parser.add_argument(
        '--modes', nargs='+', default=list(MODES), choices=MODES)
    parser.add_argument(
        '--repeat',
        type=int,
        default=None,
        help='timed runs (default: cpu 3, cuda 20)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='CPU threads (torch.set_num_threads)')
    parser.add_argument(
        '--time-budget',
        type=float,
        default=300,
        help='seconds per CPU case before it is recorded '
        'as timeout')
    parser.add_argument(
        '--mem-budget',
        type=float,
        default=16,
        help='GiB; skip materialising cases estimated above')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_ops')
    parser.add_argument(
        '--replot',
        metavar='RESULTS_JSON',
        help='only redraw the plot and table of a run')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------- cases
def make_inputs(case: Dict, device: str, requires_grad: bool):
    import torch
    gen = torch.Generator().manual_seed(0)
    b, h, n, m, d = (case[k] for k in ('batch', 'heads', 'n', 'm', 'd'))
    # SOFT scales q by d^-1/4 and the landmarks come from LN + GELU.
    q = torch.randn(b, h, n, d, generator=gen) * d**-0.25
    lm = torch.randn(b, h, m, d, generator=gen) * d**-0.25
    v = torch.randn(b, h, n, d, generator=gen)
    tensors = [t.to(device).requires_grad_(requires_grad) for t in (q, lm, v)]
    return tensors


def soft_products(impl: str):
    import torch

    from mmlinattn.ops import (gaussian_kernel, gaussian_kernel_matmul,
                               gaussian_kernel_t_matmul)

    def reference(q, lm, v):
        q_sq = q.square().sum(-1, keepdim=True)
        l_sq = lm.square().sum(-1).unsqueeze(-2)
        kernel = torch.exp(-0.5 * (q_sq + l_sq - 2 * q @ lm.transpose(-1, -2)))
        return kernel @ (kernel.transpose(-1, -2) @ v)

    def extension(q, lm, v):
        kernel = gaussian_kernel(q, lm)
        return kernel @ (kernel.transpose(-1, -2) @ v)

    def fused(q, lm, v):
        return gaussian_kernel_matmul(q, lm,
                                      gaussian_kernel_t_matmul(q, lm, v))

    return dict(reference=reference, extension=extension, fused=fused)[impl]


def estimated_bytes(case: Dict) -> int:
    """Memory of the N x M tensors a materialising case keeps."""
    if case['impl'] == 'fused':
        return 0
    kernels = 1 if case['mode'] == 'forward' else 4
    return kernels * 4 * case['batch'] * case['heads'] * case['n'] * case['m']


def proc_status_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process (Linux)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_rss_peak() -> None:
    """Reset the resident-set high-water mark (Linux >= 4.0)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def run_case(case: Dict) -> Dict:
    """Time and peak memory of one case in this process."""
    import torch
    device = case['device']
    if case.get('threads'):
        torch.set_num_threads(case['threads'])
    train = case['mode'] == 'forward+backward'
    fn = soft_products(case['impl'])
    inputs = make_inputs(case, device, train)
    out_grad = torch.randn(
        case['batch'], case['heads'], case['n'], case['d'],
        device=device) if train else None

    def once() -> None:
        if train:
            for t in inputs:
                t.grad = None
            fn(*inputs).backward(out_grad)
        else:
            with torch.no_grad():
                fn(*inputs)
        if device == 'cuda':
            torch.cuda.synchronize()

    # The warm-up runs first, so one-time allocations (BLAS buffers, thread
    # pools) are not counted; then the peak is reset and measured.
    for _ in range(case['warmup']):
        once()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_rss_peak()
        base = proc_status_bytes('VmRSS')
    times = []
    for _ in range(case['repeat']):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = proc_status_bytes('VmHWM') - base
    return dict(
        case,
        status='ok',
        time_ms=1e3 * statistics.median(times),
        peak_mib=max(peak, 0) / 2**20)


def run_cpu_case(case: Dict, budget: float) -> Dict:
    """``run_case`` in a fresh process. glibc's malloc gets a fixed mmap
    threshold, so freed tensors leave the resident set at once and its
    high-water mark measures the case alone."""
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(case)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=budget)
    except subprocess.TimeoutExpired:
        return dict(case, status='timeout')
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    oom = proc.returncode < 0 or 'memory' in proc.stderr.lower()
    return dict(
        case,
        status='oom' if oom else 'error',
        error=proc.stderr.strip().splitlines()[-1:])


def run_cuda_case(case: Dict) -> Dict:
    import torch
    try:
        return run_case(case)
    except torch.cuda.OutOfMemoryError:
        return dict(case, status='oom')
    finally:
        torch.cuda.empty_cache()


# --------------------------------------------------------------- report
def describe_device(device: str) -> str:
    import torch
    if device == 'cuda':
        return torch.cuda.get_device_name()
    model = platform.processor() or 'cpu'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{model}, {torch.get_num_threads()} threads'


def cell(result: Optional[Dict], key: str, fmt: str) -> str:
    if result is None:
        return '-'
    if result['status'] != 'ok':
        return result['status']
    return format(result[key], fmt)


def table(results: List[Dict]) -> str:
    lines = [
        '| device | mode | N | M | reference ms | extension ms | fused ms '
        '| ref / fused time | reference MiB | extension MiB | fused MiB '
        '| fused / ref memory |', '|' + '---|' * 12
    ]
    keys = sorted({(r['device'], r['mode'], r['n'], r['m'])
                   for r in results},
                  key=lambda k: (k[0], MODES.index(k[1]), k[3], k[2]))
    for device, mode, n, m in keys:
        by_impl = {
            r['impl']: r
            for r in results
            if (r['device'], r['mode'], r['n'], r['m']) == (device, mode, n, m)
        }
        ref, ext, fused = (by_impl.get(i) for i in IMPLS)
        speedup = ratio = '-'
        if ref and fused and ref['status'] == fused['status'] == 'ok':
            speedup = f"{ref['time_ms'] / fused['time_ms']:.2f}x"
            if ref['peak_mib'] > 0:
                ratio = f"{fused['peak_mib'] / ref['peak_mib']:.3f}"
        lines.append(
            f'| {device} | {mode} | {n} | {m} | '
            f"{cell(ref, 'time_ms', '.1f')} | {cell(ext, 'time_ms', '.1f')} "
            f"| {cell(fused, 'time_ms', '.1f')} | {speedup} | "
            f"{cell(ref, 'peak_mib', '.0f')} | "
            f"{cell(ext, 'peak_mib', '.0f')} | "
            f"{cell(fused, 'peak_mib', '.0f')} | {ratio} |")
    return '\n'.join(lines)


def plot(results: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    panels = sorted({(r['device'], r['mode']) for r in results})
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5 * len(panels), 8), squeeze=False)
    for col, (device, mode) in enumerate(panels):
        for row, (key, label) in enumerate([('time_ms', 'time (ms)'),
                                            ('peak_mib', 'peak memory (MiB)')
                                            ]):
            ax = axes[row][col]
            for impl in IMPLS:
                for m in sorted({r['m'] for r in results}):
                    pts = sorted(
                        (r['n'], r[key]) for r in results
                        if (r['device'], r['mode'], r['impl'], r['m']) == (
                            device, mode, impl,
                            m) and r['status'] == 'ok' and r[key] > 0)
                    if pts:
                        ax.plot(*zip(*pts), marker='o', label=f'{impl}, M={m}')
            ax.set_xscale('log')
            ax.set_yscale('log')
            ns = sorted({r['n'] for r in results})
            ax.set_xticks(ns, [f'{n:,}' for n in ns])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel('N (query tokens)')
            ax.set_ylabel(label)
            ax.set_title(f'{device}, {mode}')
            ax.grid(True, which='both', alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))), flush=True)
        return
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        write_report(saved['results'], saved['meta'], args.out_dir)
        return
    import torch

    import mmlinattn.ops as ops
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [
        d for d in args.devices if d == 'cpu' or torch.cuda.is_available()
    ]
    if not ops.ext_available():
        print('mmlinattn._ext is not built: "extension" and "fused" run the '
              'pure-PyTorch references')
    os.makedirs(args.out_dir, exist_ok=True)
    results, meta = [], dict(
        command=' '.join(sys.argv),
        devices={},
        torch=torch.__version__,
        ext=ops.ext_available(),
        ext_cuda=ops.ext_has_cuda(),
        loadavg_before=os.getloadavg())
    for device in devices:
        meta['devices'][device] = describe_device(device)
        repeat = args.repeat or (3 if device == 'cpu' else 20)
        for mode in args.modes:
            for m in args.m:
                for n in args.n:
                    for impl in args.impls:
                        case = dict(
                            device=device,
                            mode=mode,
                            n=n,
                            m=m,
                            d=args.d,
                            batch=args.batch,
                            heads=args.heads,
                            impl=impl,
                            repeat=repeat,
                            warmup=args.warmup,
                            threads=args.threads)
                        est = estimated_bytes(case)
                        if est > args.mem_budget * 2**30:
                            result = dict(case, status='skipped')
                        elif device == 'cpu':
                            result = run_cpu_case(case, args.time_budget)
                        else:
                            result = run_cuda_case(case)
                        results.append(result)
                        print(
                            f"{device:4s} {mode:16s} N={n:6d} M={m:5d} "
                            f"{impl:9s} {cell(result, 'time_ms', '10.1f')}"
                            f" ms {cell(result, 'peak_mib', '8.0f')} MiB",
                            flush=True)
    meta['loadavg_after'] = os.getloadavg()
    write_report(results, meta, args.out_dir)


def write_report(results: List[Dict], meta: Dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    report = table(results)
    header = '\n'.join(f'- {k}: {v}' for k, v in meta['devices'].items())
    header += ('\n- load average before / after: '
               f"{meta['loadavg_before'][0]:.1f} / "
               f"{meta['loadavg_after'][0]:.1f}")
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(f'{header}\n\n{report}\n')
    with open(osp.join(out_dir, 'results.json'), 'w') as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    plot(results, osp.join(out_dir, 'benchmark_ops.png'))
    print(f'\n{header}\n\n{report}\n\nwritten to {out_dir}')


if __name__ == '__main__':
    main()
