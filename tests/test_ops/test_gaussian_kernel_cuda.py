# Copyright (c) mmlinattn contributors. All rights reserved.
"""CUDA tests of the Gaussian-kernel ops of ``mmlinattn._ext`` (fused
kernels, tiles, 64-bit offsets, half precision, memory)."""
import pytest
import torch

from mmlinattn.ops import (ext_has_cuda, gaussian_kernel,
                           gaussian_kernel_matmul, gaussian_kernel_t_matmul,
                           ops_backend, sqdist)

if not torch.cuda.is_available():
    pytest.skip(
        'no CUDA device visible: the CUDA kernels are only '
        'compile-checked here (tests/test_ops/test_ops_build.py)',
        allow_module_level=True)
if not ext_has_cuda():
    pytest.skip(
        'mmlinattn._ext has no CUDA kernels: rebuild it with a GPU '
        'visible or FORCE_CUDA=1',
        allow_module_level=True)

DEVICE = 'cuda'
OPS = ['sqdist', 'gaussian_kernel', 'matmul', 't_matmul']


def oracle(op, q, l, f=None):  # noqa: E741
    dist = ((q[..., :, None, :] - l[..., None, :, :])**2).sum(-1)
    if op == 'sqdist':
        return dist
    kernel = torch.exp(-0.5 * dist)
    if op == 'gaussian_kernel':
        return kernel
    return kernel @ f if op == 'matmul' else kernel.transpose(-1, -2) @ f


def run(op, q, l, f=None, force_reference=False):  # noqa: E741
    if op == 'sqdist':
        return sqdist(q, l, force_reference=force_reference)
    if op == 'gaussian_kernel':
        return gaussian_kernel(q, l, force_reference=force_reference)
    fn = gaussian_kernel_matmul if op == 'matmul' else \
        gaussian_kernel_t_matmul
    return fn(q, l, f, force_reference=force_reference)


def make_inputs(op,
                b=2,
                h=3,
                n=9,
                m=6,
                d=5,
                e=3,
                dtype=torch.float64,
                scale=0.5,
                seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=torch.float64) * scale
    l = torch.randn(b, h, m, d, generator=g, dtype=torch.float64) * scale
    f = None
    if op in ('matmul', 't_matmul'):
        f = torch.randn(
            b,
            h,
            m if op == 'matmul' else n,
            e,
            generator=g,
            dtype=torch.float64)
    return [t.to(DEVICE, dtype) if t is not None else None for t in (q, l, f)]


def test_dispatches_to_the_extension():
    assert ops_backend(torch.empty(0, device=DEVICE)) == 'extension'


@pytest.mark.parametrize('op', OPS)
@pytest.mark.parametrize('d,e', [(5, 3), (32, 32), (33, 40), (64, 64),
                                 (80, 70)])
def test_gradcheck_float64(op, d, e):
    # d, e <= 32, <= 64 and the chunked fallback above 64.
    q, l, f = make_inputs(op, n=9, m=6, d=d, e=e)
    inputs = tuple(t.requires_grad_() for t in (q, l, f) if t is not None)
    assert torch.autograd.gradcheck(lambda *a: run(op, *a), inputs)


@pytest.mark.parametrize('op', OPS)
@pytest.mark.parametrize('n,m', [(1, 1), (63, 65), (129, 130), (700, 33),
                                 (40, 3000)])
def test_forward_backward_float32(op, n, m):
    # Tile edges: 64 x 64 sqdist tiles, 128 owners per block, 64-column
    # shared tiles; (40, 3000) exercises the column splits.
    q, l, f = make_inputs(op, b=1, h=2, n=n, m=m, d=32, e=32, scale=0.3)
    q64, l64, f64 = (
        t.detach().requires_grad_() if t is not None else None
        for t in (q, l, f))
    expected = oracle(op, q64, l64, f64)
    inputs = [
        t.float().requires_grad_() if t is not None else None
        for t in (q, l, f)
    ]
    out = run(op, *inputs)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    out_grad = torch.randn_like(expected)
    out.backward(out_grad.float())
    expected.backward(out_grad)
    for t, t64 in zip(inputs, (q64, l64, f64)):
        if t is not None:
            torch.testing.assert_close(
                t.grad.double(), t64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('dtype',
                         [torch.float32, torch.float16, torch.bfloat16])
def test_self_distance_diagonal_is_exact(dtype):
    q = torch.randn(2, 2, 100, 32, device=DEVICE).to(dtype)
    diag = sqdist(q, q).diagonal(dim1=-2, dim2=-1)
    assert torch.equal(diag, torch.zeros_like(diag))
    kdiag = gaussian_kernel(q, q).diagonal(dim1=-2, dim2=-1)
    assert torch.equal(kdiag, torch.ones_like(kdiag))


@pytest.mark.parametrize('op', OPS)
def test_same_tensor_and_non_contiguous(op):
    q = torch.randn(
        2, 40, 3, 8, device=DEVICE, dtype=torch.float64).transpose(1, 2)
    f = torch.randn(
        2, 3, 5, 40, device=DEVICE, dtype=torch.float64).transpose(-1, -2)
    f = f if op in ('matmul', 't_matmul') else None
    q.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: run(op, a, a, f), (q, ))


@pytest.mark.parametrize('op', OPS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision(op, dtype):
    q, l, f = make_inputs(op, n=300, m=4096, d=32, e=32, scale=0.1)
    inputs = [
        t.to(dtype).requires_grad_() if t is not None else None
        for t in (q, l, f)
    ]
    out = run(op, *inputs)
    assert out.dtype == dtype
    expected = oracle(
        op, *[t.detach().double() if t is not None else None for t in inputs])
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all()
               for t in inputs if t is not None)


@pytest.mark.parametrize('op', OPS)
def test_large_batch_times_heads(op):
    q, l, f = make_inputs(
        op, b=7000, h=10, n=3, m=2, d=4, e=2, dtype=torch.float32)
    torch.testing.assert_close(
        run(op, q, l, f),
        run(op, q, l, f, force_reference=True),
        rtol=1e-5,
        atol=1e-6)


def test_offsets_beyond_int32():
    # 2 * 32768 * 32769 > 2^31 output elements: 32-bit offsets would wrap.
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * 2**30:
        pytest.skip(f'needs 6 GiB of free GPU memory, {free / 2**30:.1f} '
                    'GiB free')
    b, n, m = 2, 32768, 32769
    q = torch.randn(b, 1, n, 4, device=DEVICE).half()
    l = torch.randn(b, 1, m, 4, device=DEVICE).half()
    out = sqdist(q, l)  # fp16 output: 4.3 GB
    for i, j in [(0, 0), (n - 1, m - 1), (n // 2, m - 7)]:
        expected = ((q[1, 0, i].float() - l[1, 0, j].float())**2).sum()
        torch.testing.assert_close(
            out[1, 0, i, j].float(), expected, rtol=2e-3, atol=2e-3)


def test_fused_products_are_memory_linear():
    b, h, n, m, d = 1, 2, 66800, 1000, 32
    q = torch.randn(b, h, n, d, device=DEVICE, requires_grad=True)
    l = torch.randn(b, h, m, d, device=DEVICE, requires_grad=True)
    v = torch.randn(b, h, n, d, device=DEVICE, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    context = gaussian_kernel_t_matmul(q, l, v)
    out = gaussian_kernel_matmul(q, l, context)
    out.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - start
    kernel_bytes = b * h * n * m * 4
    assert peak < 0.1 * kernel_bytes, (peak, kernel_bytes)


def test_bad_inputs_on_cuda():
    q = torch.randn(1, 2, 10, 8, device=DEVICE)
    with pytest.raises(ValueError, match='different devices'):
        gaussian_kernel_matmul(q, q.cpu(), q)
    with pytest.raises(TypeError, match='mixed dtypes'):
        gaussian_kernel_matmul(q, q.half(), q)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match='different devices'):
            sqdist(q, q.to('cuda:1'))
