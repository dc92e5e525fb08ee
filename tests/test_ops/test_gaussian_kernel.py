# Copyright (c) mmlinattn contributors. All rights reserved.
"""CPU tests of the Gaussian-kernel ops: the compiled kernels of
``mmlinattn._ext`` and the pure-PyTorch references, against a float64
oracle written here from the definitions."""
import importlib
from contextlib import nullcontext

import pytest
import torch

import mmlinattn.ops as ops
from mmlinattn.ops import (ext_available, gaussian_kernel,
                           gaussian_kernel_matmul, gaussian_kernel_t_matmul,
                           reference_ops, sqdist)

# The module (``mmlinattn.ops.gaussian_kernel`` the attribute is the op).
gk_module = importlib.import_module('mmlinattn.ops.gaussian_kernel')

NO_EXT = ('mmlinattn._ext is not built; build it with '
          '"pip install --no-build-isolation -e ." (or '
          '"python setup.py build_ext --inplace")')
BACKENDS = [
    pytest.param(
        'extension',
        marks=pytest.mark.skipif(not ext_available(), reason=NO_EXT)),
    'reference',
]
OPS = ['sqdist', 'gaussian_kernel', 'matmul', 't_matmul']


# ------------------------------------------------------------- oracle
def oracle_sqdist(q, k):
    return ((q[..., :, None, :] - k[..., None, :, :])**2).sum(-1)


def oracle(op, q, l, f=None):  # noqa: E741
    dist = oracle_sqdist(q, l)
    if op == 'sqdist':
        return dist
    kernel = torch.exp(-0.5 * dist)
    if op == 'gaussian_kernel':
        return kernel
    if op == 'matmul':
        return kernel @ f
    return kernel.transpose(-1, -2) @ f


def run(op, backend, q, l, f=None):  # noqa: E741
    force = backend == 'reference'
    if op == 'sqdist':
        return sqdist(q, l, force_reference=force)
    if op == 'gaussian_kernel':
        return gaussian_kernel(q, l, force_reference=force)
    if op == 'matmul':
        return gaussian_kernel_matmul(q, l, f, force_reference=force)
    return gaussian_kernel_t_matmul(q, l, f, force_reference=force)


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
    """q (b,h,n,d), l (b,h,m,d) at a scale where the kernel is not
    vanishingly small, and the feature tensor the op needs."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) * scale)
    l = (torch.randn(b, h, m, d, generator=g, dtype=torch.float64) * scale)
    f = None
    if op == 'matmul':
        f = torch.randn(b, h, m, e, generator=g, dtype=torch.float64)
    elif op == 't_matmul':
        f = torch.randn(b, h, n, e, generator=g, dtype=torch.float64)
    return [t.to(dtype) if t is not None else None for t in (q, l, f)]


def grads(fn, inputs, out_grad):
    inputs = [
        t.detach().requires_grad_() if t is not None else None for t in inputs
    ]
    fn(*inputs).backward(out_grad)
    return [t.grad for t in inputs if t is not None]


# ---------------------------------------------------------- correctness
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_forward_float64_and_float32(op, backend):
    # Tile sizes: CPU 4 x 16 register blocks, 64 x 512 fused tiles.
    q, l, f = make_inputs(op, n=70, m=37, d=7, e=5)
    expected = oracle(op, q, l, f)
    out64 = run(op, backend, q, l, f)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, expected, rtol=1e-12, atol=1e-12)
    out32 = run(op, backend,
                *[t.float() if t is not None else None for t in (q, l, f)])
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_gradcheck_float64(op, backend):
    q, l, f = make_inputs(op)
    inputs = tuple(t.requires_grad_() for t in (q, l, f) if t is not None)
    assert torch.autograd.gradcheck(lambda *args: run(op, backend, *args),
                                    inputs)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_backward_float32_against_float64_oracle(op, backend):
    q, l, f = make_inputs(op, n=70, m=37, d=7, e=5)
    out_grad = torch.randn_like(oracle(op, q, l, f))
    expected = grads(lambda *a: oracle(op, *a), (q, l, f), out_grad)
    got = grads(lambda *a: run(op, backend, *a),
                [t.float() if t is not None else None for t in (q, l, f)],
                out_grad.float())
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize(
    'dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_self_distance_diagonal_is_exact(backend, dtype):
    q = torch.randn(2, 2, 37, 32).to(dtype)
    force = backend == 'reference'
    diag = sqdist(q, q, force_reference=force).diagonal(dim1=-2, dim2=-1)
    assert torch.equal(diag, torch.zeros_like(diag))
    kdiag = gaussian_kernel(
        q, q, force_reference=force).diagonal(
            dim1=-2, dim2=-1)
    assert torch.equal(kdiag, torch.ones_like(kdiag))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_same_tensor_as_both_arguments(op, backend):
    # The gradients of both arguments must add up on the shared tensor.
    q, _, _ = make_inputs(op, n=11, m=11)
    f = torch.randn(2, 3, 11, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: run(op, backend, a, a, f
                      if op in ('matmul', 't_matmul') else None),
        (q.requires_grad_(), ))
    expected = grads(lambda a: oracle(op, a, a, f), (q, ),
                     torch.ones_like(oracle(op, q, q, f)))
    got = grads(lambda a: run(op, backend, a, a, f), (q, ),
                torch.ones_like(oracle(op, q, q, f)))
    torch.testing.assert_close(got[0], expected[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_non_contiguous_and_transposed_inputs(op, backend):
    b, h, n, m, d, e = 2, 3, 21, 13, 8, 6
    # q: heads split from (B, N, h, d); l: every other landmark; f: a
    # transposed (B, h, e, L) tensor.
    q = torch.randn(b, n, h, d).transpose(1, 2)
    l = torch.randn(b, h, 2 * m, d)[:, :, ::2]
    rows = m if op == 'matmul' else n
    f = torch.randn(b, h, e, rows).transpose(-1, -2)
    assert not (q.is_contiguous() or l.is_contiguous() or f.is_contiguous())
    f = f if op in ('matmul', 't_matmul') else None
    out = run(op, backend, q, l, f)
    contiguous = run(op, backend, q.contiguous(), l.contiguous(),
                     None if f is None else f.contiguous())
    # Equal up to BLAS rounding (a transposed operand may change the order).
    torch.testing.assert_close(out, contiguous, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        out.double(),
        oracle(op, q.double(), l.double(), None if f is None else f.double()),
        rtol=1e-5,
        atol=1e-5)
    got = grads(lambda *a: run(op, backend, *a), (q, l, f),
                torch.ones_like(out))
    want = grads(lambda *a: run(op, backend, *a),
                 (q.contiguous(), l.contiguous(),
                  None if f is None else f.contiguous()), torch.ones_like(out))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
@pytest.mark.parametrize('n,m', [(1, 1), (4, 16), (5, 17), (63, 15), (65, 513),
                                 (129, 3)])
def test_sizes_around_tile_edges(op, backend, n, m):
    q, l, f = make_inputs(op, b=1, h=2, n=n, m=m, d=3, e=2)
    torch.testing.assert_close(
        run(op, backend, q, l, f), oracle(op, q, l, f), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_large_batch_times_heads(op, backend):
    # B*h = 70,000 > 65,535, the CUDA limit of grid.y / grid.z.
    q, l, f = make_inputs(
        op, b=7000, h=10, n=2, m=3, d=2, e=2, dtype=torch.float32)
    torch.testing.assert_close(
        run(op, backend, q, l, f).double(),
        oracle(op, q.double(), l.double(), None if f is None else f.double()),
        rtol=1e-5,
        atol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(backend, dtype):
    # 4,096 kernel terms of ~0.6 each: a half-precision running sum would
    # be off by whole units; fp32 accumulation leaves only the output
    # rounding of the dtype.
    q = torch.full((1, 1, 8, 4), 0.25).to(dtype)
    l = (torch.rand(1, 1, 4096, 4) * 0.5).to(dtype)
    x = torch.ones(1, 1, 4096, 2, dtype=dtype)
    force = backend == 'reference'
    out = gaussian_kernel_matmul(q, l, x, force_reference=force)
    assert out.dtype == dtype
    expected = oracle('matmul', q.double(), l.double(), x.double())
    rel = ((out.double() - expected).abs() / expected).max().item()
    assert rel < (4e-3 if dtype == torch.float16 else 8e-3)
    # The same for the other ops, with gradients in the input dtype.
    for op in OPS:
        f = x if op == 'matmul' else (q[..., :2] if op == 't_matmul' else None)
        inputs = [
            t.detach().requires_grad_() if t is not None else None
            for t in (q, l, f)
        ]
        out = run(op, backend, *inputs)
        assert out.dtype == dtype
        torch.testing.assert_close(
            out.double(),
            oracle(op, q.double(), l.double(),
                   None if f is None else f.double()),
            rtol=1e-2,
            atol=1e-2)
        out.float().sum().backward()
        assert all(t.grad.dtype == dtype and torch.isfinite(t.grad).all()
                   for t in inputs if t is not None)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('op', OPS)
def test_autocast_runs_in_float32(op, backend):
    q, l, f = make_inputs(op, n=20, m=9, d=8, e=4, dtype=torch.float32)
    expected = run(op, backend, q, l, f)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = run(op, backend, q, l, f)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_expand_method_matches_exact_and_official_form():
    q, l, _ = make_inputs('sqdist', n=30, m=12, d=32, scale=1.0)
    exact = sqdist(q, l)
    expand = sqdist(q, l, method='expand')
    torch.testing.assert_close(expand, exact, rtol=1e-12, atol=1e-11)
    # The official torch-path formula (q^2 @ 1 + 1 @ k^2 - 2 q k^T).
    ones_k = torch.ones(32, 12, dtype=q.dtype)
    ones_q = torch.ones(30, 32, dtype=q.dtype)
    kT = l.transpose(-1, -2)
    official = q**2 @ ones_k + ones_q @ kT**2 - 2 * (q @ kT)
    q32, l32 = q.float(), l.float()
    torch.testing.assert_close(
        sqdist(q32, l32, method='expand').double(),
        official,
        rtol=1e-5,
        atol=5e-5)
    torch.testing.assert_close(
        gaussian_kernel(q32, l32, method='expand').double(),
        torch.exp(-official / 2),
        rtol=1e-4,
        atol=1e-6)


# --------------------------------------------------- dispatch / backends
@pytest.mark.skipif(not ext_available(), reason=NO_EXT)
@pytest.mark.parametrize('op', OPS)
def test_extension_matches_reference(op):
    q, l, f = make_inputs(
        op, n=150, m=70, d=32, e=32, dtype=torch.float32, scale=0.3)
    out_grad = torch.randn_like(run(op, 'reference', q, l, f))
    ref = run(op, 'reference', q, l, f)
    ext = run(op, 'extension', q, l, f)
    torch.testing.assert_close(ext, ref, rtol=1e-5, atol=1e-6)
    for g_ext, g_ref in zip(
            grads(lambda *a: run(op, 'extension', *a), (q, l, f), out_grad),
            grads(lambda *a: run(op, 'reference', *a), (q, l, f), out_grad)):
        torch.testing.assert_close(g_ext, g_ref, rtol=1e-4, atol=1e-5)


class _Tripwire:
    """Stands in for mmlinattn._ext and fails on any op call."""

    def has_cuda(self):
        return False

    def __getattr__(self, name):
        raise AssertionError(f'extension op {name} was called')


@pytest.mark.parametrize('op', OPS)
def test_reference_switches_bypass_the_extension(op, monkeypatch):
    monkeypatch.setattr(gk_module, 'ext_module', _Tripwire())
    monkeypatch.setattr(gk_module, '_EXT_HAS_OPS', True)
    q, l, f = make_inputs(op)
    with pytest.raises(AssertionError, match='extension op'):
        run(op, 'extension', q, l, f)
    expected = oracle(op, q, l, f)
    torch.testing.assert_close(run(op, 'reference', q, l, f), expected)
    with reference_ops():
        assert ops.ops_backend(q) == 'reference'
        torch.testing.assert_close(run(op, 'extension', q, l, f), expected)
    assert ops.ops_backend(q) == 'extension'


def test_backend_report():
    expected = 'extension' if ext_available() else 'reference'
    assert ops.ops_backend() == expected
    assert ops.ops_backend(torch.empty(0)) == expected


# ------------------------------------------------------------ bad input
def test_bad_inputs_name_the_shapes():
    q = torch.randn(2, 3, 10, 8)
    l = torch.randn(2, 3, 4, 8)
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r'q=\(2, 3, 10, 8\).*k=\(2, 3, 4, 7'):
        sqdist(q, torch.randn(2, 3, 4, 7))
    with pytest.raises(ValueError, match='batch and head dims differ'):
        gaussian_kernel(q, torch.randn(2, 4, 4, 8))
    with pytest.raises(ValueError, match='batch and head dims differ'):
        gaussian_kernel_matmul(q, l, torch.randn(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r'x=\(2, 3, 10, 5\) needs 4 rows'):
        gaussian_kernel_matmul(q, l, torch.randn(2, 3, 10, 5))
    with pytest.raises(ValueError, match=r'v=\(2, 3, 4, 5\) needs 10 rows'):
        gaussian_kernel_t_matmul(q, l, x)
    with pytest.raises(ValueError, match='expected 4-D'):
        sqdist(q[0], l[0])
    with pytest.raises(TypeError, match='mixed dtypes'):
        gaussian_kernel_matmul(q, l, x.double())
    with pytest.raises(TypeError, match='dtype torch.int64'):
        sqdist(q.long(), l.long())
    with pytest.raises(TypeError, match='must be a torch.Tensor'):
        sqdist(q, l.numpy())
    with pytest.raises(ValueError, match='different devices'):
        sqdist(q, l.to('meta'))
    with pytest.raises(ValueError, match="method must be one of"):
        gaussian_kernel(q, l, method='cuda')


@pytest.mark.skipif(not ext_available(), reason=NO_EXT)
def test_extension_entry_points_check_their_inputs():
    ext = gk_module.ext_module
    q, k = torch.randn(6, 10, 8), torch.randn(6, 4, 8)
    with pytest.raises(ValueError, match='expected 3-D'):
        ext.gaussian_sqdist_forward(q[0], k[0], False)
    with pytest.raises(ValueError, match='same channels'):
        ext.gaussian_sqdist_forward(q, k[..., :7], False)
    with pytest.raises(ValueError, match='batch\\*heads differ'):
        ext.gaussian_kernel_matmul_forward(q, k[:5], torch.randn(5, 4, 2))
    with pytest.raises(ValueError, match='x \\(B\\*h, C, e\\)'):
        ext.gaussian_kernel_matmul_forward(q, k, torch.randn(6, 5, 2))
    with pytest.raises(TypeError, match='mixed dtypes'):
        ext.gaussian_kernel_matmul_forward(q, k, torch.randn(6, 4, 2).half())
    with pytest.raises(TypeError, match='expected Half, BFloat16'):
        ext.gaussian_sqdist_forward(q.int(), k.int(), False)
    with pytest.raises(ValueError, match='different devices'):
        ext.gaussian_sqdist_forward(q, k.to('meta'), False)
    with pytest.raises(ValueError, match='a \\(B\\*h, R, e\\)'):
        ext.gaussian_kernel_matmul_backward(q, k, torch.randn(6, 10, 3),
                                            torch.randn(6, 4, 2), True)


@pytest.mark.parametrize('backend', BACKENDS)
def test_empty_sizes(backend):
    force = backend == 'reference'
    q, l = torch.randn(2, 1, 0, 4), torch.randn(2, 1, 3, 4)
    assert sqdist(q, l, force_reference=force).shape == (2, 1, 0, 3)
    out = gaussian_kernel_t_matmul(
        q, l, torch.randn(2, 1, 0, 5), force_reference=force)
    assert torch.equal(out, torch.zeros(2, 1, 3, 5))
    # d = 0: every distance is 0, every kernel entry 1.
    q0, l0 = torch.randn(1, 1, 3, 0), torch.randn(1, 1, 2, 0)
    x = torch.randn(1, 1, 2, 4)
    assert torch.equal(
        gaussian_kernel(q0, l0, force_reference=force), torch.ones(1, 1, 3, 2))
    torch.testing.assert_close(
        gaussian_kernel_matmul(q0, l0, x, force_reference=force),
        x.sum(2, keepdim=True).expand(1, 1, 3, 4))


# ------------------------------------------------- complexity analysis
@pytest.mark.parametrize('backend', BACKENDS)
def test_flop_handles_cover_the_ops(backend):
    from mmengine.analysis import FlopAnalyzer, get_model_complexity_info

    class Tiny(torch.nn.Module):

        def forward(self, q):
            l, x = q[:, :, :5], q[:, :, :5, :3]
            y = gaussian_kernel_matmul(q, l, x)  # 17*5*(8+3)
            z = gaussian_kernel_t_matmul(q, l, q)  # 17*5*(8+8)
            return y.sum() + z.sum() + sqdist(q, l).sum()  # 17*5*8

    q = torch.randn(1, 2, 17, 8)
    expected = 2 * 17 * 5 * (11 + 16 + 8)
    # The reference path counts its distances through the handle of its
    # autograd.Function and its products through aten::matmul.
    with (reference_ops() if backend == 'reference' else nullcontext()):
        analyzer = FlopAnalyzer(Tiny(), (q, ))
        assert analyzer.total() == expected
        unsupported = analyzer.unsupported_ops()
        assert not [name for name in unsupported if 'PythonOp' in name]
        info = get_model_complexity_info(
            Tiny(), inputs=(q, ), show_table=False, show_arch=False)
    assert info['flops'] == analyzer.total()


# ----------------------------------------------------- SOFT attention
@pytest.mark.skipif(not ext_available(), reason=NO_EXT)
@pytest.mark.parametrize('kernel_impl', ['auto', 'fused', 'reference'])
def test_soft_attention_same_with_and_without_extension(kernel_impl):
    from mmlinattn.models.attention.soft_attention import \
        SoftmaxFreeAttention
    torch.manual_seed(0)
    attn = SoftmaxFreeAttention(
        embed_dims=64,
        num_heads=2,
        sr_ratio=4,
        kernel_method='exact',
        kernel_impl=kernel_impl)
    x = torch.randn(2, 20 * 18, 64, requires_grad=True)
    out_ext = attn(x, (20, 18))
    (grad_ext, ) = torch.autograd.grad(out_ext.sum(), x)
    with reference_ops():
        out_ref = attn(x, (20, 18))
        (grad_ref, ) = torch.autograd.grad(out_ref.sum(), x)
    torch.testing.assert_close(out_ext, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ext, grad_ref, rtol=1e-4, atol=1e-4)


def test_ops_trace_shapes_on_meta_device():
    """Shape inference on the meta device (full-size models are checked
    there without allocating memory)."""
    from mmlinattn.ops import (gaussian_kernel, gaussian_kernel_matmul,
                               gaussian_kernel_t_matmul, sqdist)
    q = torch.empty(2, 3, 10, 32, device='meta')
    lm = torch.empty(2, 3, 4, 32, device='meta')
    assert sqdist(q, lm).shape == (2, 3, 10, 4)
    assert gaussian_kernel(q, lm).shape == (2, 3, 10, 4)
    assert gaussian_kernel_matmul(q, lm, torch.empty(
        2, 3, 4, 8, device='meta')).shape == (2, 3, 10, 8)
    assert gaussian_kernel_t_matmul(q, lm, torch.empty(
        2, 3, 10, 8, device='meta')).shape == (2, 3, 4, 8)
