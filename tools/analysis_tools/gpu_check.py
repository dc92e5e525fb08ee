# Copyright (c) mmlinattn contributors. All rights reserved.
"""One-shot GPU check of mmlinattn, written as one markdown report.

Needs torch, mmengine and mmlinattn's own extension only (no mmdet, mmseg,
mmpretrain or timm), so it runs on a bare GPU machine:

1. builds ``mmlinattn._ext`` for the visible GPU when the loaded one lacks
   CUDA kernels (``setup.py build_ext --inplace``, FORCE_CUDA=1,
   TORCH_CUDA_ARCH_LIST = the GPU's capability) and loads it;
2. runs the CUDA op tests (``tests/test_ops/test_gaussian_kernel_cuda.py``,
   needs pytest);
3. fused vs reference SOFT attention (``kernel_impl='fused'`` against
   ``'reference'``, both with the exact kernel): outputs and gradients;
4. every backbone family at its small and base size, forward + backward in
   fp32 and under fp16 / bf16 autocast at 224 and 800x1333: finite outputs
   and gradients, autocast outputs within a relative L2 tolerance of fp32;
5. throughput and peak memory (``torch.cuda.max_memory_allocated``):
   classification backbones at batch 64 @224 and dense backbones at batch 2
   @800x1333, fp32 and fp16 AMP, inference forward and training step; the
   Gaussian ops (SOFT's product pair ``K (K^T v)``) at N = 66,800,
   M = 1,000, fused vs reference.

Exit status 1 when a check fails (the report says which). ``--device cpu
--quick`` is a dry run of every section on tiny models and shapes (the
test suite runs it): one tiny arch per family, one family timed.

Examples::

    python tools/analysis_tools/gpu_check.py --out docs/gpu_check.md
    python tools/analysis_tools/gpu_check.py --device cpu --quick \
        --out work_dirs/gpu_check_dry.md
"""
import argparse
import contextlib
import importlib.util
import os
import os.path as osp
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

# Family -> (small, base) arch names; the paper's names where a "base"
# exists, else the size that plays that role (SOFT / FLatten-PVT medium,
# PVTv2 b4).
FAMILIES: Dict[str, Tuple[str, str]] = {
    'SOFT': ('small', 'medium'),
    'FLattenPVT': ('small', 'medium'),
    'FLattenPVTv2': ('b2', 'b4'),
    'FLattenSwin': ('small', 'base'),
    'FLattenCSWin': ('small', 'base'),
    'LITv2': ('small', 'base'),
    'UFOViT': ('small', 'base'),
}
# Extra constructor arguments of the dense (four-map) backbones.
DENSE_ARGS: Dict[str, dict] = {
    'SOFT': dict(with_cls_token=False),
    'UFOViT': dict(out_type='featmap'),
}
# Autocast outputs vs fp32: relative L2 error ||y_amp - y|| / ||y|| over all
# output maps (random init, eval mode).
AMP_TOL = {'fp16': 1e-2, 'bf16': 5e-2}
AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
# Packages the lent GPU machine lacks: this script must not import them.
NOT_ON_THE_GPU_MACHINE = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'timm')
# Fused vs reference SOFT attention (fp32): relative L2 error.
ATTN_TOL = 1e-4


Arch = Union[str, dict]  # a zoo name or an arch dict
# --quick: one tiny model per family (same code paths, seconds on a CPU).
QUICK_ARCHS: Dict[str, dict] = {
    'SOFT': dict(embed_dims=[32] * 4, num_heads=[1] * 4, depths=[1] * 4),
    'FLattenPVT': dict(embed_dims=[16, 16, 32, 32], num_heads=[1] * 4,
                       depths=[1] * 4, mlp_ratios=[2] * 4),
    'FLattenPVTv2': dict(embed_dims=[16, 16, 32, 32], num_heads=[1] * 4,
                         depths=[1] * 4, mlp_ratios=[2] * 4),
    'FLattenSwin': dict(embed_dims=16, depths=[2] * 4, num_heads=[1] * 4),
    'FLattenCSWin': dict(embed_dims=16, depths=[1] * 4, num_heads=[2] * 4),
    'LITv2': dict(embed_dims=16, depths=[1] * 4, num_heads=[2] * 4),
    'UFOViT': dict(embed_dims=32, depth=4, num_heads=2),
}


@dataclass
class Sizes:
    """Models, shapes and repeats of one run (full, or --quick)."""
    archs: Dict[str, Sequence[Arch]]  # family -> archs checked
    timed_archs: Dict[str, Sequence[Arch]]  # family -> archs timed
    attn_hw: Tuple[int, int]  # token grid of the SOFT attention check
    cls_hw: Tuple[int, int]
    dense_hw: Tuple[int, int]
    cls_batch: int
    dense_batch: int
    check_batch: int
    ops_n: int
    ops_m: int
    warmup: int
    iters: int


FULL = Sizes(FAMILIES, FAMILIES, (56, 56), (224, 224), (800, 1333), 64, 2, 1,
             66800, 1000, 1, 3)
# Quick: every family checked, one timed (the timing code is the same).
QUICK = Sizes({k: [v] for k, v in QUICK_ARCHS.items()},
              {'UFOViT': [QUICK_ARCHS['UFOViT']]}, (16, 16), (32, 32),
              (32, 64), 2, 1, 1, 600, 40, 0, 1)


@dataclass
class Report:
    """Markdown sections and the failed checks."""
    lines: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Sequence[str], rows: List[Sequence]) -> None:
        self.add('| ' + ' | '.join(header) + ' |',
                 '|' + '---|' * len(header))
        self.add(*('| ' + ' | '.join(str(c) for c in row) + ' |'
                   for row in rows))
        self.add('')

    def failed(self, what: str) -> str:
        """Record the exception being handled as a failure of ``what``;
        returns its one-line summary for a table cell."""
        traceback.print_exc()
        self.failures.append(what)
        exc = sys.exc_info()[1]
        text = f'{type(exc).__name__}: {exc}'.replace('|', '/')
        return '**FAIL** ' + ' '.join(text.split())[:160]

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return 'ok' if ok else '**FAIL**'

    @contextlib.contextmanager
    def section(self, title: str) -> Iterator[None]:
        """A section whose exception is reported as a failure, not raised."""
        self.add(f'## {title}', '')
        start = time.perf_counter()
        try:
            yield
        except Exception:  # report and go on with the next section
            self.failures.append(title)
            self.add('**FAIL**: the section raised:', '', '```',
                     traceback.format_exc().rstrip(), '```', '')
        self.add(f'_{time.perf_counter() - start:.1f} s_', '')


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    if dtype == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[dtype])


def reset_peak(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> str:
    """Peak allocated memory since reset_peak (CUDA); n/a on CPU."""
    if device.type != 'cuda':
        return 'n/a'
    return f'{torch.cuda.max_memory_allocated(device) / 2**20:.0f}'


def timed(fn: Callable[[], None], device: torch.device,
          sizes: Sizes) -> float:
    """Median seconds per call after the warm-up calls."""
    for _ in range(sizes.warmup):
        fn()
    times = []
    for _ in range(sizes.iters):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def rel_l2(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    num = sum(float((x.double() - y.double()).pow(2).sum())
              for x, y in zip(a, b))
    den = sum(float(y.double().pow(2).sum()) for y in b)
    return (num / max(den, 1e-300))**0.5


# ---------------------------------------------------------------- extension
def probe_extension() -> Tuple[bool, bool, str]:
    """(loaded, has CUDA kernels, message) of mmlinattn._ext, probed in a
    fresh interpreter so that a build in between is seen."""
    code = ('import mmlinattn.ops as o; '
            'print(int(o.ext_available()), int(o.ext_has_cuda()))')
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    if result.returncode != 0:
        return False, False, result.stderr.strip()[-2000:]
    loaded, cuda = result.stdout.split()[-2:]
    return loaded == '1', cuda == '1', result.stderr.strip()[-2000:]


def check_extension(report: Report, device: torch.device,
                    build: str) -> None:
    loaded, cuda, message = probe_extension()
    report.add(f'- loaded: {loaded}, CUDA kernels: {cuda}')
    wanted = device.type == 'cuda' and not cuda
    if build == 'always' or (build == 'auto' and wanted):
        env = dict(os.environ, FORCE_CUDA='1', MMLINATTN_REQUIRE_EXT='1')
        if device.type == 'cuda':
            major, minor = torch.cuda.get_device_capability(device)
            env['TORCH_CUDA_ARCH_LIST'] = f'{major}.{minor}'
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, 'setup.py', 'build_ext', '--inplace'],
            capture_output=True, text=True, cwd=REPO, env=env)
        report.add(f'- built with `setup.py build_ext --inplace` '
                   f'(TORCH_CUDA_ARCH_LIST='
                   f'{env.get("TORCH_CUDA_ARCH_LIST", "default")}) in '
                   f'{time.perf_counter() - start:.0f} s, exit code '
                   f'{result.returncode}')
        if result.returncode != 0:
            report.add('', '```', (result.stdout + result.stderr)[-3000:],
                       '```')
        loaded, cuda, message = probe_extension()
        report.add(f'- after the build: loaded: {loaded}, CUDA kernels: '
                   f'{cuda}')
    if message:
        report.add('', '```', message, '```')
    ok = loaded and (cuda or device.type != 'cuda')
    report.add(f'- {report.check(ok, "extension")}: the compiled ops are '
               f'used on {device.type}', '')


def run_op_tests(report: Report, device: torch.device) -> None:
    if importlib.util.find_spec('pytest') is None:
        report.add('pytest is not installed here (carry a wheel): the CUDA '
                   'op tests did not run.', '')
        report.check(False, 'CUDA op tests (pytest missing)')
        return
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
           '-rs', 'tests/test_ops/test_gaussian_kernel_cuda.py']
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    tail = result.stdout.strip().splitlines()[-12:]
    report.add(f'`{" ".join(cmd[1:])}`: exit code {result.returncode}', '',
               '```', *tail, '```', '')
    # On a GPU they must pass; elsewhere they skip (pytest exit code 5:
    # nothing collected).
    last = (tail or [''])[-1]
    ok = (result.returncode == 0 and 'passed' in last
          if device.type == 'cuda' else result.returncode in (0, 5)
          and 'skipped' in last)
    report.check(ok, 'CUDA op tests')


# ------------------------------------------------------------ SOFT attention
def check_soft_attention(report: Report, device: torch.device,
                         sizes: Sizes) -> None:
    from mmlinattn.models.attention import SoftmaxFreeAttention
    from mmlinattn.ops import ops_backend
    hw = sizes.attn_hw
    rows = []
    for sr_ratio in (4, 1):  # m = N / 16 and m = N landmarks
        torch.manual_seed(0)
        layers = {
            impl: SoftmaxFreeAttention(64, 2, sr_ratio, kernel_method='exact',
                                       kernel_impl=impl).to(device)
            for impl in ('reference', 'fused')
        }
        layers['fused'].load_state_dict(layers['reference'].state_dict())
        x = torch.randn(2, hw[0] * hw[1], 64, device=device)
        grads, outs = {}, {}
        for impl, layer in layers.items():
            xi = x.clone().requires_grad_()
            out = layer(xi, hw)
            out.square().mean().backward()
            outs[impl] = out.detach()
            grads[impl] = [xi.grad] + [
                p.grad for p in layer.parameters() if p.grad is not None
            ]
        out_err = rel_l2([outs['fused']], [outs['reference']])
        grad_err = rel_l2(grads['fused'], grads['reference'])
        m = (hw[0] // sr_ratio) * (hw[1] // sr_ratio)
        ok = out_err < ATTN_TOL and grad_err < ATTN_TOL
        rows.append((f'{hw[0]}x{hw[1]}', m, ops_backend(x),
                     f'{out_err:.2e}', f'{grad_err:.2e}',
                     report.check(ok, f'SOFT attention sr={sr_ratio}')))
    report.add(f'fp32, batch 2, 64 channels, 2 heads; relative L2 error of '
               f'fused vs reference, tolerance {ATTN_TOL:g}.', '')
    report.table(('grid', 'landmarks', 'ops backend', 'output error',
                  'gradient error (input + parameters)', 'status'), rows)


# ---------------------------------------------------------------- backbones
def build_backbone(family: str, arch: Arch, dense: bool,
                   device: torch.device) -> torch.nn.Module:
    from mmlinattn.registry import MODELS
    cfg = dict(type=family, arch=arch)
    if dense:
        cfg.update(out_indices=(0, 1, 2, 3), **DENSE_ARGS.get(family, {}))
    return MODELS.build(cfg).to(device)


def outputs_of(model: torch.nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    out = model(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def variants(archs_of: Dict[str, Sequence[Arch]]
             ) -> Iterator[Tuple[str, Arch, bool]]:
    """(family, arch, dense) of every backbone of ``archs_of``."""
    for family, archs in archs_of.items():
        for arch in archs:
            for dense in (False, True):
                yield family, arch, dense


def arch_name(arch: Arch) -> str:
    return arch if isinstance(arch, str) else 'tiny (quick)'


def check_backbone(report: Report, family: str, arch: Arch, dense: bool,
                   device: torch.device, sizes: Sizes) -> List[Tuple]:
    """fp32, fp16 and bf16 forward + backward of one backbone: rows."""
    hw = sizes.dense_hw if dense else sizes.cls_hw
    name = arch_name(arch)
    torch.manual_seed(0)
    model = build_backbone(family, arch, dense, device).eval()
    x = torch.randn(sizes.check_batch, 3, *hw, device=device)
    rows, ref = [], []
    for dtype in ('fp32', 'fp16', 'bf16'):
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            outs = outputs_of(model, x)
        sum(o.float().square().mean() for o in outs).backward()
        finite = all(bool(o.isfinite().all()) for o in outs) and all(
            bool(p.grad.isfinite().all()) for p in model.parameters()
            if p.grad is not None)
        outs = [o.detach().float() for o in outs]
        if dtype == 'fp32':
            ref, err, close = outs, 0.0, True
        else:
            err = rel_l2(outs, ref)
            close = err <= AMP_TOL[dtype]
        what = f'{family}-{name} {hw[0]}x{hw[1]} {dtype}'
        rows.append((family, name, f'{hw[0]}x{hw[1]}', dtype, len(outs),
                     report.check(finite, what + ' finite'), f'{err:.1e}',
                     report.check(close, what + ' vs fp32')))
    return rows


def check_backbones(report: Report, device: torch.device,
                    sizes: Sizes) -> None:
    rows = []
    for family, arch, dense in variants(sizes.archs):
        hw = sizes.dense_hw if dense else sizes.cls_hw
        try:
            rows += check_backbone(report, family, arch, dense, device, sizes)
        except Exception:  # one broken backbone must not hide the others
            name = f'{family}-{arch_name(arch)} {hw[0]}x{hw[1]}'
            rows.append((family, arch_name(arch), f'{hw[0]}x{hw[1]}', '-',
                         '-', report.failed(name), '-', '-'))
    report.add(f'batch {sizes.check_batch}, random init, eval mode; '
               f'loss = sum of the mean squares of the outputs. Tolerance '
               f'of the autocast outputs vs fp32 (relative L2 over all '
               f'maps): fp16 {AMP_TOL["fp16"]:g}, bf16 {AMP_TOL["bf16"]:g}.',
               '')
    report.table(('family', 'arch', 'input', 'dtype', 'outputs',
                  'finite (outputs, grads)', 'error vs fp32', 'status'), rows)


def measure_backbone(family: str, arch: Arch, dense: bool,
                     device: torch.device, sizes: Sizes) -> List[Tuple]:
    """Throughput and peak memory of one backbone: rows."""
    hw = sizes.dense_hw if dense else sizes.cls_hw
    batch = sizes.dense_batch if dense else sizes.cls_batch
    name = arch_name(arch)
    torch.manual_seed(0)
    model = build_backbone(family, arch, dense, device)
    x = torch.randn(batch, 3, *hw, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type)
    rows = []
    for dtype in ('fp32', 'fp16'):

        def forward() -> None:
            with torch.no_grad(), autocast(device, dtype):
                outputs_of(model, x)

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                loss = sum(o.float().square().mean()
                           for o in outputs_of(model, x))
            if dtype == 'fp32':
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

        for mode, fn in (('forward', forward), ('train step', train_step)):
            model.train(mode == 'train step')
            reset_peak(device)
            seconds = timed(fn, device, sizes)
            rows.append((family, name, f'{hw[0]}x{hw[1]}', batch,
                         'fp32' if dtype == 'fp32' else 'AMP fp16', mode,
                         f'{batch / seconds:.1f}', f'{seconds * 1e3:.1f}',
                         peak_mib(device)))
    return rows


def measure_backbones(report: Report, device: torch.device,
                      sizes: Sizes) -> None:
    rows = []
    for family, arch, dense in variants(sizes.timed_archs):
        try:
            rows += measure_backbone(family, arch, dense, device, sizes)
        except Exception:  # one broken backbone must not hide the others
            name = f'{family}-{arch_name(arch)}'
            rows.append((family, arch_name(arch),
                         'dense' if dense else 'cls', '-', '-', '-', '-', '-',
                         report.failed(f'{name} throughput')))
    report.add(f'{sizes.warmup} warm-up + median of {sizes.iters} timed '
               'calls; forward in eval mode under no_grad, training step = '
               'forward + backward + SGD step (GradScaler under AMP); peak '
               'memory = torch.cuda.max_memory_allocated (model, optimizer '
               'and batch included).', '')
    report.table(('family', 'arch', 'input', 'batch', 'precision', 'mode',
                  'img/s', 'ms / batch', 'peak MiB'), rows)


# ----------------------------------------------------------- Gaussian ops
def measure_ops(report: Report, device: torch.device, sizes: Sizes) -> None:
    from mmlinattn.ops import (gaussian_kernel_matmul,
                               gaussian_kernel_matmul_reference,
                               gaussian_kernel_t_matmul,
                               gaussian_kernel_t_matmul_reference)
    n, m, d = sizes.ops_n, sizes.ops_m, 32
    g = torch.Generator(device='cpu').manual_seed(0)
    q = (torch.randn(1, 2, n, d, generator=g) / d**0.5).to(device)
    lm = (torch.randn(1, 2, m, d, generator=g) / d**0.5).to(device)
    v = torch.randn(1, 2, n, d, generator=g).to(device)
    impls = {
        'reference': (gaussian_kernel_matmul_reference,
                      gaussian_kernel_t_matmul_reference),
        'fused': (gaussian_kernel_matmul, gaussian_kernel_t_matmul),
    }
    rows, results = [], {}
    for name, (mm, tmm) in impls.items():
        for backward in (False, True):
            ins = [t.clone().requires_grad_(backward) for t in (q, lm, v)]

            def step() -> None:
                out = mm(ins[0], ins[1], tmm(ins[0], ins[1], ins[2]))
                results[name, backward] = out.detach()
                if backward:
                    out.sum().backward()

            reset_peak(device)
            seconds = timed(step, device, sizes)
            rows.append((name, 'forward+backward' if backward else 'forward',
                         f'{seconds * 1e3:.1f}', peak_mib(device)))
    err = rel_l2([results['fused', False]], [results['reference', False]])
    report.add(f'SOFT product pair `K (K^T v)`: B = 1, h = 2, N = {n}, '
               f'M = {m}, d = e = {d}, fp32. Fused vs reference relative '
               f'L2 error {err:.1e} '
               f'({report.check(err < ATTN_TOL, "Gaussian ops values")}).',
               '')
    report.table(('implementation', 'mode', 'ms', 'peak MiB'), rows)


def environment(device: torch.device, quick: bool) -> List[str]:
    import mmengine

    import mmlinattn
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' \
        else platform.processor() or platform.machine()
    return [
        f'- device: {name}', f'- torch {torch.__version__} (CUDA '
        f'{torch.version.cuda}), mmengine {mmengine.__version__}, '
        f'mmlinattn {mmlinattn.__version__}, Python '
        f'{platform.python_version()}',
        f'- command: `{" ".join([osp.relpath(sys.argv[0])] + sys.argv[1:])}`'
        + (' (quick dry run: tiny models and shapes)' if quick else '')
    ]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes and small sizes only (dry run)')
    parser.add_argument('--build', choices=('auto', 'never', 'always'),
                        default='auto',
                        help='build mmlinattn._ext (auto: when the device is '
                        'CUDA and the loaded extension lacks CUDA kernels)')
    parser.add_argument('--out', default='work_dirs/gpu_check.md',
                        help='markdown report')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    report = Report()
    start = time.perf_counter()
    report.add('# mmlinattn GPU check', '')
    with report.section('Extension'):
        check_extension(report, device, args.build)
    # Imported after a possible build, so that this process loads it.
    import mmlinattn  # noqa: F401
    report.lines[2:2] = environment(device, args.quick) + ['']
    with report.section('CUDA op tests'):
        run_op_tests(report, device)
    with report.section('SOFT attention: fused vs reference'):
        check_soft_attention(report, device, sizes)
    with report.section('Backbones: forward + backward, fp32 and autocast'):
        check_backbones(report, device, sizes)
    with report.section('Backbones: throughput and peak memory'):
        measure_backbones(report, device, sizes)
    with report.section('Gaussian ops: fused vs reference'):
        measure_ops(report, device, sizes)
    imported = sorted(m for m in NOT_ON_THE_GPU_MACHINE if m in sys.modules)
    report.add('## Dependencies', '',
               f'- imported by this run: {", ".join(imported) or "none"} of '
               f'{", ".join(NOT_ON_THE_GPU_MACHINE)} '
               f'({report.check(not imported, "dependencies")})', '')
    status = 'FAIL' if report.failures else 'PASS'
    report.add('## Result', '', f'**{status}** in '
               f'{time.perf_counter() - start:.0f} s' +
               (': ' + '; '.join(report.failures) if report.failures else ''))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write('\n'.join(report.lines) + '\n')
    print(f'gpu_check: {status}, report written to {args.out}')
    return 1 if report.failures else 0


if __name__ == '__main__':
    sys.exit(main())
