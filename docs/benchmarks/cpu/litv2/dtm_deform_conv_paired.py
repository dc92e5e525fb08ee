# Copyright (c) mmlinattn contributors. All rights reserved.
"""Record of a measurement: DTM's deformable conv (2x2, stride 2) on CPU,
torchvision's kernel vs the gather decomposition that
``DeformableConv2d`` runs on CPU (``deform_conv2d_gather``), at LITv2-S's three DTM shapes (batch 4,
224 input) and stage 1 at batch 8. Paired in one process, alternating;
speed-up = torchvision / decomposition, median of the per-repeat ratios.

    python docs/benchmarks/cpu/litv2/dtm_deform_conv_paired.py --threads 2
"""
import argparse

import torch
from torchvision.ops import deform_conv2d

from mmlinattn.models.backbones.litv2 import deform_conv2d_gather
from mmlinattn.utils.benchmarking import paired_speedup, time_paired

SHAPES = [(4, 96, 56, 192), (4, 192, 28, 384), (4, 384, 14, 768),
          (8, 96, 56, 192)]  # (B, C_in, H = W, C_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = {
        'torchvision':
        lambda x, o, w, b: deform_conv2d(x, o, w, b, stride=(2, 2)),
        'decomposition':
        lambda x, o, w, b: deform_conv2d_gather(x, o, w, b, (2, 2), (0, 0))
    }
    print('| (B, C, H, C_out) | max rel. diff | forward ms tv / ours | '
          'speed-up | fwd+bwd ms tv / ours | speed-up |\n'
          '|---|---:|---:|---:|---:|---:|')
    for B, C, H, C_out in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, C, H, H, generator=g)
        weight = torch.randn(C_out, C, 2, 2, generator=g) * .05
        bias = torch.randn(C_out, generator=g)
        offset = torch.randn(B, 8, H // 2, H // 2, generator=g) * .7
        tv = impls['torchvision'](x, offset, weight, bias)
        ours = impls['decomposition'](x, offset, weight, bias)
        diff = ((tv - ours).abs().max() / tv.abs().max()).item()
        upstream = torch.randn_like(tv)
        leaves = [t.clone().requires_grad_() for t in (x, offset, weight)]

        def forward(fn):
            def call():
                with torch.no_grad():
                    fn(x, offset, weight, bias)
            return call

        def backward(fn):
            def call():
                torch.autograd.grad(fn(*leaves, bias), leaves, upstream)
            return call

        fwd = paired_speedup(
            time_paired({k: forward(f) for k, f in impls.items()}, 9,
                        warmup=1), 'torchvision', 'decomposition')
        bwd = paired_speedup(
            time_paired({k: backward(f) for k, f in impls.items()}, 7,
                        warmup=1), 'torchvision', 'decomposition')
        print(f'| {(B, C, H, C_out)} | {diff:.1e} | '
              f'{fwd["torchvision_ms"]:.1f} / {fwd["decomposition_ms"]:.1f} '
              f'| {fwd["speedup"]:.2f}x | {bwd["torchvision_ms"]:.1f} / '
              f'{bwd["decomposition_ms"]:.1f} | {bwd["speedup"]:.2f}x |')


if __name__ == '__main__':
    main()
