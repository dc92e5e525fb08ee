# Copyright (c) mmlinattn contributors. All rights reserved.
"""Record of a measurement: the three GEMMs of a Linear layer (forward
``x W^T + b``, input gradient ``g W``, weight gradient ``g^T x``) at the
models' shapes, PyTorch's default BLAS (MKL) vs oneDNN as
``mmlinattn.models.utils.gemm`` runs them (``linear``, ``matmul``,
``weight_grad``; narrow weight gradients stay on MKL by design). Paired in
one process, alternating; speed-up = MKL / ours, median of the per-repeat
ratios [min-max].

    python docs/benchmarks/cpu/gemm_backend.py --threads 2
"""
import argparse

import torch

from mmlinattn.models.utils import blas_gemm
from mmlinattn.models.utils.gemm import linear, matmul, weight_grad
from mmlinattn.utils.benchmarking import paired_speedup, time_paired

# (rows, in, out): FLatten-PVT-T stage-1 / -2 MLPs at batch 8, LITv2-S
# stage-1 ConvFFN at batch 8, stage-3 projections of PVT-T / Swin-T at batch
# 8, a Swin-T stage-3 MLP at batch 4
SHAPES = [(25088, 64, 512), (25088, 512, 64), (25088, 96, 384),
          (6272, 128, 1024), (1568, 320, 1280), (1568, 384, 1152),
          (1568, 384, 1536), (1568, 1536, 384), (784, 384, 1536)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int)
    parser.add_argument('--repeat', type=int, default=9)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print('| (rows, in, out) | GEMM | MKL ms | ours ms | speed-up |\n'
          '|---|---|---:|---:|---:|')
    for rows, fin, fout in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, fin, generator=g)
        w = torch.randn(fout, fin, generator=g)
        b = torch.randn(fout, generator=g)
        grad = torch.randn(rows, fout, generator=g)
        gemms = {
            'forward': lambda: linear(x, w, b),
            'input grad': lambda: matmul(grad, w),
            'weight grad': lambda: weight_grad(grad, x)
        }
        for name, fn in gemms.items():
            def mkl(fn=fn):
                with blas_gemm():
                    fn()
            times = time_paired({'mkl': mkl, 'ours': fn}, args.repeat,
                                warmup=2)
            r = paired_speedup(times, 'mkl', 'ours')
            print(f'| ({rows}, {fin}, {fout}) | {name} | {r["mkl_ms"]:.2f} | '
                  f'{r["ours_ms"]:.2f} | {r["speedup"]:.2f}x '
                  f'[{r["speedup_min"]:.2f}-{r["speedup_max"]:.2f}] |',
                  flush=True)


if __name__ == '__main__':
    main()
