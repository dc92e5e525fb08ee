# Copyright (c) mmlinattn contributors. All rights reserved.
"""Inference throughput (img/s) and peak memory of a backbone or model.

Protocol: eval mode, ``torch.no_grad()``, ``--warmup`` untimed passes
(which also compile with ``--compile``), then ``--repeat`` timed repeats of
``--iters`` passes each (auto: enough passes for >= 0.2 s); the median
repeat gives the time per batch, ``batch / time`` the throughput.
``fp16`` / ``bf16`` run under ``torch.autocast`` (layers that pin parts of
their math to fp32 keep doing so). Peak memory above the model and the
input batch: on CUDA ``torch.cuda.max_memory_allocated`` after a reset;
on CPU the growth of the resident-set high-water mark (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs``), which includes allocator
overhead. Toolbox models run their network forward (``mode='tensor'``,
no post-processing).

Examples::

    python tools/analysis_tools/benchmark.py --backbone LITv2 --arch small \
        --shape 224 --batch-size 64 --device cuda --dtype fp16 --out s.json
    python tools/analysis_tools/benchmark.py \
        configs/detection/retinanet_litv2_small_1x.py --backbone-only \
        --shape 800 1333 --batch-size 1 --threads 2
"""
import argparse
import ctypes
import gc
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Dict, Optional

import torch
from mmengine.config import DictAction

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


# -------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Inference throughput and peak memory of a model')
    parser.add_argument('config', nargs='?', help='config file')
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='benchmark model.backbone of the config')
    parser.add_argument(
        '--backbone',
        help='registered backbone name '
        '(instead of a config), e.g. LITv2')
    parser.add_argument('--arch', help='arch of --backbone')
    parser.add_argument(
        '--backbone-args',
        nargs='+',
        action=DictAction,
        default={},
        help='extra --backbone arguments, key=value')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[224], help='input H [W]')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--dtype',
        choices=list(DTYPES),
        default='fp32',
        help='fp16/bf16 through torch.autocast')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the model (compiled in warm-up)')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument(
        '--iters',
        type=int,
        default=0,
        help='passes per timed repeat (0: auto, >= 0.2 s)')
    parser.add_argument(
        '--threads', type=int, help='torch.set_num_threads (CPU)')
    parser.add_argument('--out', help='write the result as JSON')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from mmlinattn.utils.model_builder import build_model, parse_shape

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = parse_shape(args.shape)
    model, kind = build_model(
        args.config,
        args.backbone,
        args.arch,
        args.backbone_args,
        args.cfg_options,
        backbone_only=args.backbone_only,
        shape=shape)
    params = sum(p.numel() for p in model.parameters())
    model = model.to(device)
    if args.compile:
        model = torch.compile(model)
    inputs = torch.randn(args.batch_size, 3, *shape, device=device)

    def forward():
        with torch.no_grad(), autocast(device, args.dtype):
            return model(inputs)

    memory = PeakMemory(device)
    timing = time_fn(
        forward,
        device,
        args.warmup,
        args.repeat,
        args.iters,
        after_warmup=memory.reset)
    peak = memory.peak_bytes()
    result = dict(
        model=kind,
        input_shape=[args.batch_size, 3, *shape],
        dtype=args.dtype,
        compile=args.compile,
        params=params,
        img_per_s=args.batch_size / timing['median_s'],
        ms_per_batch=timing['median_s'] * 1e3,
        peak_mem_mb=None if peak is None else peak / 2**20,
        timing=timing,
        **environment(device))
    mem = ('n/a' if peak is None else f'{peak / 2**20:.1f} MiB above model '
           'and input')
    print(f'{kind}\ninput {result["input_shape"]} {args.dtype}'
          f'{" compiled" if args.compile else ""} on {result["device"]}\n'
          f'{result["img_per_s"]:.2f} img/s ({result["ms_per_batch"]:.2f} ms '
          f'per batch, median of {args.repeat} x {timing["iters_per_repeat"]}'
          f'), peak memory {mem}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
