# Copyright (c) mmlinattn contributors. All rights reserved.
"""Inference throughput (img/s) or training-step time, and peak memory, of a
backbone or model.

Protocol (``--mode inference``): eval mode, ``torch.no_grad()``, ``--warmup``
untimed passes
(which also compile with ``--compile``), then ``--repeat`` timed repeats of
``--iters`` passes each (auto: enough passes for >= 0.2 s); the median
repeat gives the time per batch, ``batch / time`` the throughput.
``fp16`` / ``bf16`` run under ``torch.autocast`` (layers that pin parts of
their math to fp32 keep doing so). Peak memory above the model and the
input batch: on CUDA ``torch.cuda.max_memory_allocated`` after a reset;
on CPU the growth of the resident-set high-water mark (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs``), which includes allocator
overhead. Toolbox models run their network forward (``mode='tensor'``,
no post-processing). ``--mode train``: train mode, one pass is a training
step without optimizer (gradients cleared, forward, backward of the sum of
the means of every output tensor); ``--warmup 0 --repeat 1 --iters 1``
measures the first step, whose peak includes allocating the gradients.

Examples::

    python tools/analysis_tools/benchmark.py --backbone LITv2 --arch small \
        --shape 224 --batch-size 64 --device cuda --dtype fp16 --out s.json
    python tools/analysis_tools/benchmark.py \
        configs/detection/retinanet_litv2_small_1x.py --backbone-only \
        --shape 800 1333 --batch-size 1 --threads 2
    python tools/analysis_tools/benchmark.py \
        configs/detection/retinanet_litv2_small_1x.py --backbone-only \
        --mode train --shape 800 1333 --batch-size 2 --threads 2 \
        --warmup 0 --repeat 1 --iters 1
"""
import argparse
import json
from typing import List

import torch
from mmengine.config import DictAction
from torch.utils._pytree import tree_leaves

from mmlinattn.utils.benchmarking import (DTYPES, PeakMemory, autocast,
                                          environment, time_fn)


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
        '--mode',
        choices=('inference', 'train'),
        default='inference',
        help='inference: no_grad forward; train: forward + backward')
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


def output_tensors(outputs: object) -> List[torch.Tensor]:
    """The floating-point tensors in a (nested) model output."""
    return [
        t for t in tree_leaves(outputs)
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]


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

    def train_step():
        for param in model.parameters():
            param.grad = None
        with autocast(device, args.dtype):
            loss = sum(t.float().mean() for t in output_tensors(model(inputs)))
        loss.backward()

    if args.mode == 'train':
        model.train()

    memory = PeakMemory(device)
    timing = time_fn(
        train_step if args.mode == 'train' else forward,
        device,
        args.warmup,
        args.repeat,
        args.iters,
        after_warmup=memory.reset)
    peak = memory.peak_bytes()
    result = dict(
        model=kind,
        input_shape=[args.batch_size, 3, *shape],
        mode=args.mode,
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
    unit = 'training step' if args.mode == 'train' else 'batch'
    print(f'{kind}\ninput {result["input_shape"]} {args.dtype}'
          f'{" compiled" if args.compile else ""} {args.mode} on '
          f'{result["device"]}\n'
          f'{result["img_per_s"]:.2f} img/s ({result["ms_per_batch"]:.2f} ms '
          f'per {unit}, median of {args.repeat} x '
          f'{timing["iters_per_repeat"]}), peak memory {mem}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
