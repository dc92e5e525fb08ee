# Copyright (c) mmlinattn contributors. All rights reserved.
"""The CUDA kernels of ``ops/csrc/common/cuda/`` executed on the CPU.

``cuda_emulation/cuda_emulation.hpp`` turns the ``__global__`` kernels into
plain C++20 (blocks in sequence, the threads of a block as ``std::thread`` s
meeting at a ``std::barrier``); ``cuda_emulation/run_kernels.cpp`` launches
them through ``gaussian_kernel_cuda_plan.cuh``, the plan the real launcher
uses. The driver is compiled once per session with AddressSanitizer and
UndefinedBehaviorSanitizer, runs every case in one process and the results
are checked against float64 references written from the definitions; a
ThreadSanitizer build runs one case per kernel and dtype to find
shared-memory accesses that no ``__syncthreads()`` orders. docs/ops.md says
what this cannot see.
"""
import os
import os.path as osp
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KERNELS = osp.join(REPO, 'ops', 'csrc', 'common', 'cuda')
EMULATION = osp.join(osp.dirname(osp.abspath(__file__)), 'cuda_emulation')

SQDIST_TILE, SQDIST_CHANNELS, OWNER_ROWS = 64, 16, 128
FUSED_TILE = {'float': 64, 'double': 32}
EPS = {'float': float(np.finfo(np.float32).eps),
       'double': float(np.finfo(np.float64).eps)}
# SMs given to the split planner: 132 (H100) splits the columns of small
# grids, 1 never splits.
MANY_SMS, ONE_SM = 132, 1


@dataclass(frozen=True)
class Case:
    op: str  # sqdist | gaussian | forward | grad | grad_kb
    dtype: str  # float | double
    batch: int
    rows: int
    cols: int
    d: int
    e: int = 1
    sms: int = MANY_SMS
    same_points: bool = False  # k = q (sqdist / gaussian)

    @property
    def name(self) -> str:
        return (f'{self.op}-{self.dtype}-b{self.batch}-r{self.rows}'
                f'-c{self.cols}-d{self.d}-e{self.e}-sm{self.sms}'
                + ('-same' if self.same_points else ''))


def _edges(tile: int) -> List[int]:
    return [1, tile - 1, tile, tile + 1]


def _cases() -> List[Case]:
    cases = []
    for dtype in ('float', 'double'):
        col_tile = FUSED_TILE[dtype]
        for op in ('sqdist', 'gaussian'):
            # rows and columns at every 64-tile edge, channels at every
            # 16-channel edge, non-multiples, several batch*heads.
            for i, (n, m) in enumerate(
                    zip(_edges(SQDIST_TILE) + [130, 200],
                        [65, 64, 63, 1, 191, 129])):
                d = (_edges(SQDIST_CHANNELS) + [40, 100])[i]
                cases.append(Case(op, dtype, 1 + i % 3, n, m, d))
            cases.append(Case(op, dtype, 2, 70, 70, 24, same_points=True))
            # Grid flattening: many batch*heads, each with 2 x 2 tiles.
            cases.append(Case(op, dtype, 40, 65, 70, 3))
        for op in ('forward', 'grad', 'grad_kb'):
            max_e = 200 if op == 'forward' else 64
            # Every D/E instantiation, with d, e at and around its edges;
            # rows at the 128-row block edges; columns at the tile edges.
            des = [(1, 1), (31, 32), (32, 33), (33, 31), (64, 64), (63, 65),
                   (17, 100), (40, 129), (5, 200)]
            des = [(d, e) for d, e in des if e <= max_e]
            rows = _edges(OWNER_ROWS) + [300]
            cols = _edges(col_tile) + [3 * col_tile + 5]
            for i, (d, e) in enumerate(des):
                cases.append(
                    Case(op, dtype, 1 + i % 2, rows[i % len(rows)],
                         cols[i % len(cols)], d, e, sms=ONE_SM))
            # Column splits > 1 (uneven last split) and rows < one block.
            cases.append(Case(op, dtype, 1, 100, 9 * col_tile + 7, 24, 20))
            cases.append(Case(op, dtype, 2, 129, 777, 40, 48))
            # Grid flattening: many batch*heads with 2 row blocks each.
            cases.append(Case(op, dtype, 24, 130, 70, 8, 8, sms=ONE_SM))
    return cases


CASES = _cases()
# ThreadSanitizer runs are ~10x slower: one case per op and dtype, each with
# several column tiles (several __syncthreads() rounds) and two splits.
RACE_CASES = [
    Case(op, dtype, 1, 70, 5 * FUSED_TILE[dtype] + 3, 20, 24)
    for dtype in ('float', 'double')
    for op in ('sqdist', 'gaussian', 'forward', 'grad', 'grad_kb')
]


def _inputs(case: Case) -> List[np.ndarray]:
    """Inputs scaled so that the Gaussian is neither 0 nor 1, representable
    in the case's dtype (the kernels see exactly these values)."""
    arrays = _random_inputs(case)
    if case.dtype == 'float':
        arrays = [a.astype(np.float32).astype(np.float64) for a in arrays]
    return arrays


def _random_inputs(case: Case) -> List[np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    scale = 1 / np.sqrt(max(case.d, 1))
    b, r, c, d, e = case.batch, case.rows, case.cols, case.d, case.e
    if case.op in ('sqdist', 'gaussian'):
        q = rng.standard_normal((b, r, d)) * scale
        k = q[:, :c].copy() if case.same_points else \
            rng.standard_normal((b, c, d)) * scale
        return [q, k]
    arrays = [rng.standard_normal((b, r, d)) * scale,
              rng.standard_normal((b, c, d)) * scale,
              rng.standard_normal((b, c, e))]
    if case.op != 'forward':
        arrays.append(rng.standard_normal((b, r, e)))
    return arrays


def _sqdist(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    dist = np.zeros((q.shape[0], q.shape[1], k.shape[1]))
    for c in range(q.shape[2]):
        dist += (q[:, :, None, c] - k[:, None, :, c])**2
    return dist


def reference(case: Case,
              inputs: List[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(value, scale) per output: float64 values from the definitions and
    the sum of the magnitudes of their terms, which bounds the rounding
    error of any summation order."""
    if case.op == 'sqdist':
        dist = _sqdist(*inputs)
        return [(dist, dist)]
    if case.op == 'gaussian':
        dist = _sqdist(*inputs)
        kernel = np.exp(-0.5 * dist)
        return [(kernel, kernel * (1 + dist))]
    p, o, f = inputs[:3]
    kernel = np.exp(-0.5 * _sqdist(p, o))
    if case.op == 'forward':
        return [(kernel @ f, kernel @ np.abs(f))]
    a = inputs[3]
    s = kernel * (a @ f.transpose(0, 2, 1))
    grad = s @ o - s.sum(-1, keepdims=True) * p
    grad_scale = np.abs(s) @ np.abs(o) + \
        np.abs(s).sum(-1, keepdims=True) * np.abs(p)
    outputs = [(grad, grad_scale)]
    if case.op == 'grad_kb':
        outputs.append((kernel @ f, kernel @ np.abs(f)))
    return outputs


def _output_shapes(case: Case) -> List[Tuple[int, ...]]:
    b, r = case.batch, case.rows
    if case.op in ('sqdist', 'gaussian'):
        return [(b, r, case.cols)]
    if case.op == 'forward':
        return [(b, r, case.e)]
    return [(b, r, case.d)] + ([(b, r, case.e)]
                               if case.op == 'grad_kb' else [])


@dataclass
class Emulated:
    """What the driver ran: the launch plan and the outputs per case."""
    plans: Dict[str, Dict[str, int]]
    inputs: Dict[str, List[np.ndarray]]
    outputs: Dict[str, List[np.ndarray]]


def compile_driver(out_dir: str, sanitizers: str) -> str:
    """Compile run_kernels.cpp (every kernel instantiation in one translation
    unit) with ``-fsanitize=<sanitizers>``."""
    cxx = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
    if cxx is None:
        pytest.skip('no C++ compiler (g++) found: the CUDA kernels cannot be '
                    'emulated')
    exe = osp.join(out_dir, 'run_kernels_' + sanitizers.replace(',', '_'))
    cmd = [
        cxx, '-std=c++20', '-O1', '-g', '-pthread',
        f'-fsanitize={sanitizers}', '-fno-sanitize-recover=all',
        '-fno-omit-frame-pointer', '-Wall', '-Wextra',
        '-Wno-unknown-pragmas', f'-I{EMULATION}', f'-I{KERNELS}',
        osp.join(EMULATION, 'run_kernels.cpp'), '-o', exe
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, ' '.join(cmd) + '\n' + \
        result.stderr[-6000:]
    return exe


def run_driver(exe: str, cases: List[Case], work: str) -> Emulated:
    lines, inputs = [], {}
    for i, case in enumerate(cases):
        arrays = _inputs(case)
        inputs[case.name] = arrays
        src, dst = osp.join(work, f'{i}.in'), osp.join(work, f'{i}.out')
        np.concatenate([a.ravel() for a in arrays]).tofile(src)
        lines.append(f'{case.name} {case.op} {case.dtype} {case.batch} '
                     f'{case.rows} {case.cols} {case.d} {case.e} {case.sms} '
                     f'{src} {dst}')
    case_file = osp.join(work, 'cases.txt')
    with open(case_file, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    env = dict(os.environ,
               ASAN_OPTIONS='detect_leaks=1:abort_on_error=0',
               UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1',
               TSAN_OPTIONS='halt_on_error=1')
    result = subprocess.run([exe, case_file], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and not result.stderr, (
        f'emulated kernels failed (exit {result.returncode}):\n'
        f'{result.stderr[:8000]}')
    plans = {}
    keys = ('grid_x', 'grid_y', 'block_x', 'kernel_d', 'kernel_e',
            'e_chunks', 'splits')
    for line in result.stdout.splitlines():
        name, *values = line.split()
        plans[name] = dict(zip(keys, map(int, values)))
    outputs = {}
    for i, case in enumerate(cases):
        flat = np.fromfile(osp.join(work, f'{i}.out'))
        shapes = _output_shapes(case)
        sizes = [int(np.prod(s)) for s in shapes]
        assert flat.size == sum(sizes), case.name
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        outputs[case.name] = [p.reshape(s) for p, s in zip(parts, shapes)]
    return Emulated(plans, inputs, outputs)


@pytest.fixture(scope='session')
def emulated(tmp_path_factory) -> Emulated:
    work = str(tmp_path_factory.mktemp('cuda_emulation'))
    return run_driver(compile_driver(work, 'address,undefined'), CASES, work)


def assert_matches_reference(case: Case, emulated: Emulated) -> None:
    """Every output within the rounding-error bound of its float64
    reference: (terms + 8) * unit roundoff * (sum of the magnitudes of the
    terms), terms = distance channels + summed columns (+8 covers the exp and
    the final conversions). An indexing or synchronisation error is off by
    the size of a term, far above it."""
    outputs = emulated.outputs[case.name]
    expected = reference(case, emulated.inputs[case.name])
    assert len(outputs) == len(expected)
    terms = case.d + (0 if case.op in ('sqdist', 'gaussian') else case.cols)
    for out, (ref, scale) in zip(outputs, expected):
        bound = (terms + 8) * EPS[case.dtype] * scale + 1e-300
        err = np.abs(out - ref)
        worst = np.unravel_index(np.argmax(err / bound), err.shape)
        assert np.all(err <= bound), (
            f'{case.name}: |error| {err[worst]:.3g} > bound '
            f'{bound[worst]:.3g} at {worst} (value {out[worst]!r}, '
            f'reference {ref[worst]!r})')


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_kernel_matches_float64_reference(emulated, case):
    assert_matches_reference(case, emulated)


def test_kernels_have_no_data_race(tmp_path):
    """Under ThreadSanitizer every shared-memory access of one emulated
    thread is ordered against the others' by a __syncthreads() (a missing
    one is reported as a data race and fails the run), and the results
    match."""
    work = str(tmp_path)
    raced = run_driver(compile_driver(work, 'thread'), RACE_CASES, work)
    assert all(p['splits'] == 2 for c, p in raced.plans.items()
               if not c.startswith(('sqdist', 'gaussian')))
    for case in RACE_CASES:
        assert_matches_reference(case, raced)


def test_same_points_give_exact_zero_distances(emulated):
    """The difference form gives exactly 0 (exactly 1 for the kernel) on
    the diagonal of K(q, q), on every tile."""
    same = [c for c in CASES if c.same_points]
    assert len(same) == 4
    for case in same:
        out = emulated.outputs[case.name][0]
        diag = np.diagonal(out, axis1=1, axis2=2)
        assert np.all(diag == (0.0 if case.op == 'sqdist' else 1.0)), \
            case.name


def test_cases_cover_the_launch_plan(emulated):
    """The plans that ran (as reported by the driver) cover every D/E
    instantiation, column splits, feature chunks, partial row blocks and
    flattened grids, for every mode and dtype."""
    plans = emulated.plans
    assert set(plans) == {c.name for c in CASES}
    for dtype in ('float', 'double'):
        for op in ('forward', 'grad', 'grad_kb'):
            ran = [(c, plans[c.name]) for c in CASES
                   if c.op == op and c.dtype == dtype]
            assert {(p['kernel_d'], p['kernel_e']) for _, p in ran} == {
                (32, 32), (32, 64), (64, 32), (64, 64)}, (op, dtype)
            assert any(p['splits'] > 1 for _, p in ran), (op, dtype)
            assert any(c.rows < OWNER_ROWS for c, _ in ran), (op, dtype)
            assert any(c.batch >= 16 and p['grid_x'] >= 2 * c.batch
                       for c, p in ran), (op, dtype)
            if op == 'forward':
                assert max(p['e_chunks'] for _, p in ran) >= 3, dtype
            assert all(p['block_x'] == OWNER_ROWS for _, p in ran)
        for op in ('sqdist', 'gaussian'):
            ran = [(c, plans[c.name]) for c in CASES
                   if c.op == op and c.dtype == dtype]
            assert any(p['grid_x'] >= 4 * c.batch and c.batch >= 16
                       for c, p in ran), (op, dtype)

