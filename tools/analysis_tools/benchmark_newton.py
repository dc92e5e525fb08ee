# Copyright (c) mmlinattn contributors. All rights reserved.
"""SOFT's Newton-Schulz steps: ours against the official ``2V - V A V``
formulation, side by side in one process.

Ours is :func:`~mmlinattn.ops.newton_schulz_steps` (``fused``: the compiled
in-cache kernel where it applies, m <= 128, with a backward that recomputes
the iterates; else the GEMM form) and its GEMM form alone
(:func:`~mmlinattn.ops.newton_schulz_steps_reference`, ``gemm``: one
``bmm`` and one ``baddbmm`` per step). For each (matrices, m) case the
implementations run on the same landmark kernels, interleaved (A B C A B C
...), and the median time of each is printed with the ratio official /
fused: ``forward`` (no autograd, as variant a in the forward pass)
and ``train`` (forward + backward through the iterations, as SOFT-Norm's
variant b), plus the memory autograd keeps for that backward (bytes of the
saved tensors, each storage once).

Example::

    python tools/analysis_tools/benchmark_newton.py --threads 2 \\
        --cases 10x49 768x49 16x196 4x1025
"""
import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from mmlinattn.models.attention.soft_attention import newton_steps_reference
from mmlinattn.ops import newton_schulz_steps, newton_schulz_steps_reference

IMPLS = {
    'official': newton_steps_reference,
    'gemm': newton_schulz_steps_reference,
    'fused': newton_schulz_steps
}


def landmark_kernels(batch: int, m: int, device: torch.device) -> torch.Tensor:
    """Gaussian kernels of random landmarks, as SOFT's ``A = k(L, L)``."""
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(batch, m, 32, generator=gen) * 0.35
    return torch.exp(-0.5 * torch.cdist(points, points)**2).to(device)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def saved_mib(fn: Callable, mat: torch.Tensor, iters: int) -> float:
    """MiB of the tensors autograd keeps for the backward of ``fn`` (each
    storage counted once): the training memory of the iterations."""
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    leaf = mat.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        start = leaf / leaf.sum(-1).amax(-1)[..., None, None]**2
        fn(start, leaf, iters)
    return sum(storages.values()) / 2**20


def run_case(mat: torch.Tensor, iters: int, mode: str,
             repeat: int) -> Dict[str, Dict[str, float]]:
    device = mat.device
    inv0 = mat / mat.sum(-1).amax(-1)[..., None, None]**2

    def step(fn: Callable) -> None:
        if mode == 'forward':
            with torch.no_grad():
                fn(inv0, mat, iters)
        else:
            leaf = mat.detach().requires_grad_()
            start = leaf / leaf.sum(-1).amax(-1)[..., None, None]**2
            fn(start, leaf, iters).sum().backward()

    times: Dict[str, List[float]] = {name: [] for name in IMPLS}
    for fn in IMPLS.values():  # warm-up
        step(fn)
    for _ in range(repeat):
        for name, fn in IMPLS.items():
            _sync(device)
            start = time.perf_counter()
            step(fn)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {
        name: dict(
            ms=statistics.median(times[name]) * 1e3,
            saved_mib=saved_mib(fn, mat, iters) if mode == 'train' else 0.)
        for name, fn in IMPLS.items()
    }


def parse_case(text: str) -> Sequence[int]:
    batch, m = text.lower().split('x')
    return int(batch), int(m)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--cases',
        nargs='+',
        type=parse_case,
        default=[(10, 49), (768, 49), (16, 196), (4, 1025)],
        help='BATCHxM: number of m x m matrices (batch * heads) and m')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--repeat', type=int, default=7)
    parser.add_argument('--threads', type=int)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = []
    print(f'{"mode":8} {"case":>9} {"official ms":>12} {"gemm ms":>8} '
          f'{"fused ms":>9} {"speed-up":>9} {"official saved MiB":>19} '
          f'{"fused saved MiB":>16}')
    for batch, m in args.cases:
        mat = landmark_kernels(batch, m, device)
        for mode in ('forward', 'train'):
            res = run_case(mat, args.iters, mode, args.repeat)
            off, gemm, fus = res['official'], res['gemm'], res['fused']
            results.append(dict(batch=batch, m=m, mode=mode, **{
                f'{impl}_{key}': value
                for impl, vals in res.items() for key, value in vals.items()
            }))
            print(f'{mode:8} {f"{batch}x{m}":>9} {off["ms"]:12.2f} '
                  f'{gemm["ms"]:8.2f} {fus["ms"]:9.2f} {off["ms"] / fus["ms"]:8.2f}x '
                  f'{off["saved_mib"]:19.1f} {fus["saved_mib"]:16.1f}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    command=' '.join(sys.argv),
                    device=str(device),
                    threads=torch.get_num_threads(),
                    torch=torch.__version__,
                    results=results),
                f,
                indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
