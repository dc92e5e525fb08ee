# Copyright (c) mmlinattn contributors. All rights reserved.
"""Measurement helpers of the benchmark tools: environment record, timing,
peak memory, complexity analysis, scaling exponents."""
import argparse
import ctypes
import gc
import json
import logging
import math
import os
import os.path as osp
import platform
import statistics
import sys
import time
import warnings
from collections import Counter
from contextlib import nullcontext
from typing import (Callable, ContextManager, Dict, List, Optional, Sequence,
                    Tuple)

import torch
import torch.nn as nn

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


# ------------------------------------------------------------- environment
def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model and the thread count torch uses."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(
                line.split(':', 1)[1].strip() for line in f
                if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu} ({torch.get_num_threads()} threads)'


def environment(device: torch.device) -> Dict:
    """What a benchmark record needs to be reproducible."""
    info = dict(
        device=device_name(device),
        torch=torch.__version__,
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        command=' '.join([osp.relpath(sys.argv[0])] + sys.argv[1:]))
    if hasattr(os, 'getloadavg'):
        info['loadavg_1_5_15'] = [round(v, 2) for v in os.getloadavg()]
    return info


def autocast(device: torch.device, dtype: str) -> ContextManager:
    if dtype == 'fp32':
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ memory
class PeakMemory:
    """Peak memory allocated between :meth:`reset` and :meth:`peak_bytes`,
    above what was allocated at :meth:`reset` (CUDA: the caching
    allocator's counters; CPU: resident-set high-water mark)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    @staticmethod
    def _status(field: str) -> Optional[int]:
        try:
            with open('/proc/self/status') as f:
                for line in f:
                    if line.startswith(field + ':'):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def reset(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        # Give memory that glibc keeps for reuse back to the OS, so that
        # the next passes grow the RSS to their real peak again ...
        gc.collect()
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:  # ... then '5' resets VmHWM to the RSS (Linux >= 4.0)
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        except OSError:
            pass
        self.base = self._status('VmRSS') or 0

    def peak_bytes(self) -> Optional[int]:
        """None where the platform offers no measurement."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        hwm = self._status('VmHWM')
        return None if hwm is None else max(hwm - self.base, 0)


# ------------------------------------------------------------------ timing
def time_fn(fn: Callable[[], object],
            device: torch.device,
            warmup: int = 3,
            repeat: int = 5,
            iters: int = 0,
            min_repeat_s: float = 0.2,
            after_warmup: Optional[Callable[[], None]] = None) -> Dict:
    """Median seconds per call of ``fn`` over ``repeat`` repeats of
    ``iters`` calls (``iters=0``: as many as fill ``min_repeat_s``, from
    the time of the last warm-up call), after ``warmup`` untimed calls
    (then ``after_warmup()`` runs, e.g. a memory-counter reset)."""
    last = None
    for _ in range(warmup):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        last = time.perf_counter() - start
    if iters <= 0:
        iters = 1 if not last else max(1, math.ceil(min_repeat_s / last))
    if after_warmup is not None:
        after_warmup()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / iters)
    return dict(
        median_s=statistics.median(times),
        min_s=min(times),
        max_s=max(times),
        iters_per_repeat=iters,
        repeats=repeat,
        warmup=warmup)


def time_paired(calls: Dict[str, Callable[[], object]],
                repeat: int,
                iters: int = 1,
                warmup: int = 0) -> Dict[str, List[float]]:
    """Seconds per call of each of ``calls`` (name -> function) in
    ``repeat`` rounds of ``iters`` calls each, after ``warmup`` untimed
    calls of each. Every round times all of them, in the given order on
    even rounds and reversed on odd ones, so that drifting machine load hits
    both sides alike: compare them by the per-round ratios."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: Dict[str, List[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(iters):
                calls[name]()
            times[name].append((time.perf_counter() - start) / iters)
    return times


def paired_speedup(times: Dict[str, List[float]], baseline: str,
                   candidate: str) -> Dict[str, float]:
    """Summary of a :func:`time_paired` result: the median milliseconds of
    ``baseline`` and ``candidate`` (keys ``<name>_ms``) and the speed-up
    ``baseline / candidate`` as the median of the per-round ratios, with
    their min and max."""
    ratios = [b / c for b, c in zip(times[baseline], times[candidate])]
    return {
        f'{baseline}_ms': statistics.median(times[baseline]) * 1e3,
        f'{candidate}_ms': statistics.median(times[candidate]) * 1e3,
        'speedup': statistics.median(ratios),
        'speedup_min': min(ratios),
        'speedup_max': max(ratios)
    }


def paired_modes(modes: Dict[str, Callable[[str], Callable[[], object]]],
                 names: Tuple[str, str], repeat: int, warmup: int,
                 **fields) -> List[Dict]:
    """One :func:`paired_speedup` row per mode: ``modes`` maps a mode name
    to a function that returns the call to time for an implementation
    name; ``names`` = (baseline, candidate); ``fields`` go into every row."""
    rows = []
    for mode, wrap in modes.items():
        times = time_paired({name: wrap(name) for name in names},
                            repeat,
                            warmup=warmup)
        rows.append(dict(**fields, mode=mode,
                         **paired_speedup(times, *names)))
    return rows


def paired_markdown_row(row: Dict, first: str, second: str) -> str:
    """``| shape | mode | <first> ms | <second> ms | speed-up [min-max] |``
    of a :func:`paired_modes` row with a ``shape`` field."""
    return (f'| {tuple(row["shape"])} | {row["mode"]} | '
            f'{row[first + "_ms"]:.2f} | {row[second + "_ms"]:.2f} | '
            f'{row["speedup"]:.2f}x [{row["speedup_min"]:.2f}-'
            f'{row["speedup_max"]:.2f}] |')


def paired_tool_parser(description: str, default_shapes: Sequence[Tuple[
        int, int, int]], repeat: int, warmup: int) -> argparse.ArgumentParser:
    """The options every paired tool has: ``--shapes`` (BxNxC token shapes),
    ``--repeat``, ``--warmup``, ``--threads`` and ``--out`` (JSON)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        '--shapes',
        type=parse_token_shape,
        nargs='+',
        default=list(default_shapes),
        help='BxNxC token shapes')
    parser.add_argument('--repeat', type=int, default=repeat)
    parser.add_argument('--warmup', type=int, default=warmup)
    parser.add_argument('--threads', type=int)
    parser.add_argument('--out', help='write the results as JSON')
    return parser


def run_paired_table(args: argparse.Namespace, title: str, candidate: str,
                     baseline: str, measure: Callable[[Tuple[int, int, int]],
                                                      List[Dict]], /,
                     **record) -> List[Dict]:
    """A paired tool's run: ``measure(shape)`` for every shape of
    ``args.shapes`` (on ``args.threads`` threads), each row printed as
    ``| title | mode | <candidate> ms | <baseline> ms | speed-up |``; the
    rows, ``args.repeat``, ``record`` and the environment written to
    ``args.out`` as JSON when given."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'| {title} | mode | {candidate} ms | {baseline} ms | speed-up |\n'
          '|---|---|---:|---:|---:|')
    rows = []
    for shape in args.shapes:
        for row in measure(shape):
            rows.append(row)
            print(paired_markdown_row(row, candidate, baseline))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(rows=rows, repeat=args.repeat, **record,
                     **environment(torch.device('cpu'))),
                f,
                indent=2)
    return rows


def parse_token_shape(text: str) -> Tuple[int, int, int]:
    """``'8x3136x64'`` -> (B, N, C), for ``--shapes`` options."""
    try:
        batch, tokens, channels = (int(v) for v in text.split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'shape {text!r}: write it as BxNxC, e.g. 8x3136x64') from None
    return batch, tokens, channels


# -------------------------------------------------------------- analysis
def analyze(model: nn.Module,
            inputs: Tuple[torch.Tensor, ...],
            table_depth: int = 0) -> Dict:
    """Params, FLOPs (multiply-adds; total and per operator kind),
    activations and the ops that were not counted, from one traced forward
    of ``model(*inputs)``."""
    from mmengine.analysis import (ActivationAnalyzer, FlopAnalyzer,
                                   parameter_count)
    from mmengine.analysis.print_helper import complexity_stats_table
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)  # the unsupported ops are reported below
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')  # tracer warnings
            flops = FlopAnalyzer(model, inputs)
            flops.unsupported_ops_warnings(False)
            flops.uncalled_modules_warnings(False)
            total_flops = flops.total()
            by_operator = dict(flops.by_operator())
            acts = ActivationAnalyzer(model, inputs)
            acts.unsupported_ops_warnings(False)
            acts.uncalled_modules_warnings(False)
            total_acts = acts.total()
            table = complexity_stats_table(
                flops, max_depth=table_depth,
                activations=acts) if table_depth else ''
    finally:
        logger.setLevel(level)
    return dict(
        params=parameter_count(model)[''],
        flops=total_flops,
        flops_by_operator=by_operator,
        activations=total_acts,
        not_counted=dict(Counter(flops.unsupported_ops())),
        table=table)


# --------------------------------------------------------------- scaling
def fit_exponent(points: Sequence[Tuple[int, float]], lo: int,
                 hi: int) -> Tuple[Optional[float], int]:
    """Least-squares k of ``time ~ tokens^k`` over points with
    ``lo <= tokens <= hi``; (None, n) with fewer than two points."""
    pts = [(math.log(n), math.log(t)) for n, t in points
           if lo <= n <= hi and t > 0]
    if len(pts) < 2:
        return None, len(pts)
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx)**2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    return sxy / sxx, len(pts)
