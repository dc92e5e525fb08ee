# Copyright (c) mmlinattn contributors. All rights reserved.
"""Paired timing of the depthwise conv with the compiled weight gradient
(:func:`mmlinattn.ops.depthwise_conv2d`) against ``F.conv2d`` on oneDNN:
the weight gradient alone, and forward + backward (input, weight and bias
gradients of a fixed upstream gradient), on (B, N, C) tokens of a square
grid viewed as a channels-last map, as FLatten's DWC sees them. Each repeat
times one call of each implementation, alternating which goes first; the
speed-up is the median of the per-repeat ratios onednn / compiled (min-max
beside it).

Example (FLatten-PVTv2-B0's DWC at 224, batch 4)::

    python tools/analysis_tools/benchmark_depthwise_conv.py \
        --shapes 4x3136x32 4x784x64 4x196x160 4x49x256 --threads 2
"""
import argparse
import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from mmlinattn.models.utils import tokens_as_nchw
from mmlinattn.ops import depthwise_conv2d
from mmlinattn.ops.depthwise_conv import (_use_compiled,
                                          depthwise_conv2d_weight_grad)
from mmlinattn.utils.benchmarking import (paired_modes, paired_tool_parser,
                                          run_paired_table)


def parse_args() -> argparse.Namespace:
    parser = paired_tool_parser(
        __doc__.split('\n\n')[0],
        [(4, 3136, 32), (4, 784, 64), (4, 196, 160), (4, 49, 256)],
        repeat=15,
        warmup=2)
    parser.add_argument('--kernel-size', type=int, default=5)
    return parser.parse_args()


def measure(shape: Tuple[int, int, int], kernel_size: int, warmup: int,
            repeat: int) -> List[Dict]:
    B, N, C = shape
    side = math.isqrt(N)
    if side * side != N:
        raise SystemExit(f'{N} tokens are not a square grid')
    generator = torch.Generator().manual_seed(0)
    x = tokens_as_nchw(torch.randn(B, N, C, generator=generator),
                       (side, side)).requires_grad_()
    weight = torch.randn(C, 1, kernel_size, kernel_size,
                         generator=generator).requires_grad_()
    bias = torch.randn(C, generator=generator).requires_grad_()
    padding = (kernel_size // 2, ) * 2
    if not _use_compiled(x, weight, bias, padding):
        raise SystemExit('the compiled weight gradient does not apply here '
                         '(build mmlinattn._ext: pip install '
                         '--no-build-isolation -e .; 3x3 kernels stay on '
                         'oneDNN)')
    upstream = tokens_as_nchw(
        torch.randn(B, N, C, generator=generator), (side, side))
    convs = {
        'compiled': lambda: depthwise_conv2d(x, weight, bias, padding),
        'onednn': lambda: F.conv2d(x, weight, bias, padding=padding, groups=C)
    }
    weight_grads = {
        'compiled':
        lambda: depthwise_conv2d_weight_grad(upstream, x.detach(),
                                             weight.shape[2:], padding),
        'onednn':
        lambda: torch.ops.aten.convolution_backward(
            upstream, x.detach(), weight.detach(), None, [1, 1],
            list(padding), [1, 1], False, [0, 0], C, [False, True, False])
    }
    return paired_modes(
        {
            'weight gradient': lambda name: weight_grads[name],
            'forward+backward': lambda name: lambda: torch.autograd.grad(
                convs[name](), (x, weight, bias), upstream)
        }, ('onednn', 'compiled'),
        repeat,
        warmup,
        shape=list(shape))


def main() -> None:
    args = parse_args()
    k = args.kernel_size
    run_paired_table(
        args,
        f'shape (B, N, C), {k}x{k}',
        'compiled',
        'onednn',
        lambda shape: measure(shape, k, args.warmup, args.repeat),
        kernel_size=k)


if __name__ == '__main__':
    main()
