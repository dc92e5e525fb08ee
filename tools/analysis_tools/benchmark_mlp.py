# Copyright (c) mmlinattn contributors. All rights reserved.
"""Paired timing of an :class:`~mmlinattn.models.utils.Mlp` against the
same MLP without one of its CPU paths: forward (``no_grad``) and forward +
backward (of a fixed upstream gradient) on (B, N, C) tokens of a square
grid. ``--baseline untiled`` (default): the cache-tiled MLP against whole
tensors (``untiled_mlp()``); ``--baseline blas``: its GEMMs on oneDNN
against PyTorch's default BLAS (``blas_gemm()``). Each repeat times one
call of each, alternating which goes first; the speed-up is the median of
the per-repeat ratios baseline / default (min-max beside it).

Example (FLatten-PVT-T's stage-1 and -2 MLPs at 224, batch 8; LITv2-S's
stage-1 and -2 ConvFFNs)::

    python tools/analysis_tools/benchmark_mlp.py \
        --shapes 8x3136x64 8x784x128 --mlp-ratio 8 --threads 2
    python tools/analysis_tools/benchmark_mlp.py \
        --shapes 8x3136x96 8x784x192 --mlp-ratio 4 --conv-ffn --threads 2
    python tools/analysis_tools/benchmark_mlp.py --baseline blas \
        --shapes 8x3136x64 8x784x128 8x196x320 --mlp-ratio 8 --threads 2
"""
import argparse
import math
from contextlib import nullcontext
from typing import Dict, List, Tuple

import torch

from mmlinattn.models.utils import Mlp, blas_gemm, untiled_mlp
from mmlinattn.utils.benchmarking import (paired_modes, paired_tool_parser,
                                          run_paired_table)


# --baseline -> (the switch that makes the baseline, the default's name)
BASELINES = {'untiled': (untiled_mlp, 'tiled'), 'blas': (blas_gemm, 'onednn')}


def parse_args() -> argparse.Namespace:
    parser = paired_tool_parser(__doc__.split('\n\n')[0],
                                [(8, 3136, 64), (8, 784, 128)],
                                repeat=9,
                                warmup=1)
    parser.add_argument('--mlp-ratio', type=float, default=8.)
    parser.add_argument('--conv-ffn', action='store_true',
                        help='ConvFFN (3x3 depthwise conv after fc1)')
    parser.add_argument(
        '--baseline',
        choices=sorted(BASELINES),
        default='untiled',
        help='what the default MLP is compared with')
    return parser.parse_args()


def measure(shape: Tuple[int, int, int], mlp_ratio: float, conv_ffn: bool,
            baseline: str, warmup: int, repeat: int) -> List[Dict]:
    batch, tokens, channels = shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise SystemExit(f'N={tokens} of {shape} is not a square grid')
    torch.manual_seed(0)
    mlp = Mlp(channels, int(channels * mlp_ratio), use_dwconv=conv_ffn)
    x = torch.randn(*shape)
    upstream = torch.randn(*shape)
    hw = (side, side)
    switch, default = BASELINES[baseline]

    def path(name):
        return switch() if name == baseline else nullcontext()

    def forward(name):
        def call():
            with torch.no_grad(), path(name):
                mlp(x, hw)
        return call

    def backward(name):
        xg = x.clone().requires_grad_()
        params = list(mlp.parameters())

        def call():  # backward needs its own forward: both are timed
            with path(name):
                torch.autograd.grad(mlp(xg, hw), [xg] + params, upstream)
        return call

    return paired_modes({
        'forward': forward,
        'forward+backward': backward
    }, (baseline, default),
                        repeat,
                        warmup,
                        shape=list(shape))


def main() -> None:
    args = parse_args()
    kind = 'ConvFFN' if args.conv_ffn else 'MLP'
    run_paired_table(
        args,
        f'{kind} (B, N, C), ratio {args.mlp_ratio:g}',
        BASELINES[args.baseline][1],
        args.baseline,
        lambda shape: measure(shape, args.mlp_ratio, args.conv_ffn,
                              args.baseline, args.warmup, args.repeat),
        mlp_ratio=args.mlp_ratio,
        conv_ffn=args.conv_ffn,
        baseline=args.baseline)


if __name__ == '__main__':
    main()
