# Copyright (c) mmlinattn contributors. All rights reserved.
"""Paired timing of FLatten's focusing function: the fused kernel of
``mmlinattn._ext`` against its PyTorch reference, forward (``no_grad``) and
backward (of a fixed upstream gradient, both inputs), on (B, N, C) features
with a per-channel scale. With ``--attention`` it times the whole normalised
focused linear attention instead (:func:`~mmlinattn.ops.
focused_linear_attention`: focusing of q and k, the key-value product and the
normalised query products fused, against the composition of the focusing
kernel and the batched GEMMs), self-attention with heads of ``--head-dims``
channels: forward (``no_grad``), and forward + backward as FLatten's
attention core runs them (the forward, then
:func:`~mmlinattn.ops.focused_linear_attention_backward` of a fixed upstream
gradient from its key-value product and normaliser; reference: both
compositions). Each repeat times one call of each
implementation, alternating which goes first; the speed-up is the median of
the per-repeat ratios reference / fused (min-max beside it).

Example (the stage-1 to stage-3 shapes of FLatten-PVT-T at 224, batch 8)::

    python tools/analysis_tools/benchmark_focusing.py \
        --shapes 8x3136x64 8x784x128 8x196x320 --threads 2
    python tools/analysis_tools/benchmark_focusing.py --attention \
        --shapes 1x3136x64 1x784x128 1x196x320 --threads 2
"""
import argparse
from typing import Callable, Dict, List, Tuple

import torch

from mmlinattn.ops import (focused_linear_attention,
                           focused_linear_attention_backward,
                           focused_linear_attention_backward_reference,
                           focused_linear_attention_reference,
                           focusing_backend, focusing_function,
                           focusing_function_reference)
from mmlinattn.utils.benchmarking import (paired_modes, paired_tool_parser,
                                          run_paired_table)


def parse_args() -> argparse.Namespace:
    parser = paired_tool_parser(__doc__.split('\n\n')[0],
                                [(8, 3136, 64), (8, 784, 128), (8, 196, 320)],
                                repeat=15,
                                warmup=2)
    parser.add_argument('--focusing-factor', type=float, default=3.)
    parser.add_argument(
        '--attention',
        action='store_true',
        help='time the fused focused linear attention (forward, and '
        'forward + backward)')
    parser.add_argument(
        '--head-dims',
        type=int,
        default=64,
        help='channels per head with --attention (C must be a multiple)')
    return parser.parse_args()


def paired_forward_and_backward(forward: Callable, backward: Callable,
                                repeat: int, warmup: int,
                                **row: object) -> List[Dict]:
    """Paired rows, fused against reference, of the two modes; ``forward``
    and ``backward`` map an implementation's name to its timed call."""
    return paired_modes({
        'forward': forward,
        'forward+backward': backward
    }, ('reference', 'fused'), repeat, warmup, **row)


def measure(shape: Tuple[int, int, int], p: float, warmup: int,
            repeat: int) -> List[Dict]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    scale = torch.rand(1, 1, shape[-1], generator=generator) + 0.5
    if focusing_backend(x, scale) != 'extension':
        raise SystemExit('the fused kernel is not available here (build '
                         'mmlinattn._ext: pip install --no-build-isolation '
                         '-e .)')
    upstream = torch.randn(*shape, generator=generator)
    impls = {
        'fused': focusing_function,
        'reference': focusing_function_reference
    }

    def forward(name):
        def call():
            with torch.no_grad():
                impls[name](x, scale, p)
        return call

    def backward(name):
        xg, sg = x.clone().requires_grad_(), scale.clone().requires_grad_()

        def call():  # backward needs its own forward: both are timed
            torch.autograd.grad(impls[name](xg, sg, p), (xg, sg), upstream)
        return call

    return paired_forward_and_backward(forward, backward, repeat, warmup,
                                       shape=list(shape))


def measure_attention(shape: Tuple[int, int, int], p: float, head_dims: int,
                      warmup: int, repeat: int) -> List[Dict]:
    channels = shape[-1]
    if channels % head_dims:
        raise SystemExit(f'--head-dims {head_dims} does not divide the '
                         f'{channels} channels of {shape}')
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=generator) for _ in range(3))
    scale = torch.rand(1, 1, channels, generator=generator) + 0.5
    upstream = torch.randn(*shape, generator=generator)
    heads = channels // head_dims
    impls = {
        'fused':
        (focused_linear_attention, focused_linear_attention_backward),
        'reference': (focused_linear_attention_reference,
                      focused_linear_attention_backward_reference)
    }

    def forward(name):
        def call():
            with torch.no_grad():
                impls[name][0](q, k, v, scale, p, heads)
        return call

    def backward(name):
        attention, gradients = impls[name]

        def call():  # the core's backward needs its forward: both timed
            with torch.no_grad():
                _, kv, normaliser = attention(q, k, v, scale, p, heads)
                gradients(upstream, q, k, v, scale, kv, normaliser, p, heads)
        return call

    return paired_forward_and_backward(forward, backward, repeat, warmup,
                                       shape=list(shape), heads=heads)


def main() -> None:
    args = parse_args()
    if args.attention:
        run_paired_table(
            args,
            'shape (B, N, C), attention',
            'fused',
            'reference',
            lambda shape: measure_attention(shape, args.focusing_factor, args.
                                            head_dims, args.warmup, args.
                                            repeat),
            focusing_factor=args.focusing_factor,
            op='focused_linear_attention',
            head_dims=args.head_dims)
        return
    run_paired_table(
        args,
        'shape (B, N, C)',
        'fused',
        'reference',
        lambda shape: measure(shape, args.focusing_factor, args.warmup,
                              args.repeat),
        focusing_factor=args.focusing_factor,
        op='focusing_function')


if __name__ == '__main__':
    main()
