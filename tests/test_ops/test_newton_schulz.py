# Copyright (c) mmlinattn contributors. All rights reserved.
"""The compiled Newton-Schulz steps of mmlinattn._ext against the batched
GEMM form (values, sizes around the vector and tile widths, dispatch,
determinism, errors)."""

import pytest
import torch

from mmlinattn.ops import (newton_schulz_steps, newton_schulz_steps_reference,
                           reference_ops)
from mmlinattn.ops import newton_schulz as ns
from mmlinattn.ops.ext_loader import ext_module

pytestmark = pytest.mark.needs_ext_op('newton_schulz_steps')

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12)
}


def landmark_system(batch, m, dtype=torch.float32, seed=0):
    """SOFT's variant (a) start: A = k(L, L) + 0.01 I, V0 = 1.8 A / max
    row-sum^2 (so the steps converge to A^-1)."""
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(*batch, m, 8, generator=g, dtype=dtype) * 0.5
    mat = torch.exp(-0.5 * torch.cdist(points, points)**2)
    mat = mat + 0.01 * torch.eye(m, dtype=dtype)
    alpha = 1.8 / mat.sum(-1).amax(-1)**2
    return alpha[..., None, None] * mat, mat


@pytest.fixture
def counting(count_ext_calls):
    return count_ext_calls(ns, 'newton_schulz_steps')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('batch, m', [((10, ), 49), ((3, 2), 7), ((2, ), 17),
                                      ((1, ), 64), ((2, ), 100),
                                      ((1, ), 128), ((4, ), 1)])
def test_kernel_matches_batched_gemms(counting, dtype, batch, m):
    """Row counts around the 4-row tiles, column counts around the vector
    width (16 float / 8 double lanes) and the 4-vector tiles, up to the
    largest m the kernel serves."""
    inv, mat = landmark_system(batch, m, dtype)
    out = newton_schulz_steps(inv, mat, 20)
    assert counting.calls == 1 and out.shape == inv.shape
    torch.testing.assert_close(out, newton_schulz_steps_reference(inv, mat, 20),
                               **TOL[dtype])
    # converged to the inverse: the test would pass on a kernel doing nothing
    # only if the reference did nothing too
    eye = torch.eye(m, dtype=dtype).expand_as(mat)
    assert (mat @ out - eye).abs().amax() < (mat @ inv - eye).abs().amax()


def test_broadcast_mat_and_strided_inputs(counting):
    inv, mat = landmark_system((2, 3), 20, torch.float64)
    shared = mat[0, 0]  # (m, m), broadcast over (2, 3)
    torch.testing.assert_close(
        newton_schulz_steps(inv, shared, 5),
        newton_schulz_steps_reference(inv, shared, 5), **TOL[torch.float64])
    inv_t = inv.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not inv_t.is_contiguous()
    torch.testing.assert_close(
        newton_schulz_steps(inv_t, mat, 5),
        newton_schulz_steps_reference(inv, mat, 5), **TOL[torch.float64])
    assert counting.calls == 2


def test_result_does_not_depend_on_the_threads():
    inv, mat = landmark_system((12, ), 49)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = newton_schulz_steps(inv, mat, 20)
        torch.set_num_threads(max(2, threads))
        many = newton_schulz_steps(inv, mat, 20)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_zero_steps_and_empty_batch():
    inv, mat = landmark_system((2, ), 9)
    out = newton_schulz_steps(inv, mat, 0)
    assert torch.equal(out, inv) and out.data_ptr() != inv.data_ptr()
    empty = torch.empty(0, 9, 9)
    assert newton_schulz_steps(empty, empty, 3).shape == (0, 9, 9)


def test_dispatch(counting):
    """The kernel for float CPU tensors up to m = 128, outside autocast and
    ``reference_ops``, with or without autograd through the steps."""
    inv, mat = landmark_system((2, ), 16)

    def compiled(inv, mat):
        before = counting.calls
        newton_schulz_steps(inv, mat, 2)
        return counting.calls > before

    assert compiled(inv, mat)
    assert compiled(inv, mat.clone().requires_grad_())
    with reference_ops():
        assert not compiled(inv, mat)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not compiled(inv, mat)
    assert not compiled(inv.half(), mat.half())
    big_inv, big_mat = landmark_system((1, ), ns.MAX_COMPILED_ORDER + 1)
    assert not compiled(big_inv, big_mat)
    meta = inv.to('meta')
    assert not compiled(meta, meta)


def back_off_start(mat):
    """SOFT-Norm's variant (b): V0 = alpha A with alpha from A's row sums,
    so the gradient reaches A through V0 too."""
    return 2 * mat / mat.sum(-1).amax(-1)[..., None, None]**2


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_gradients_equal_autograd_of_the_gemm_form(dtype):
    """Through V0 and A (as in variant b), for a batched and a broadcast
    A; fp64 to 1e-9 (different summation order only)."""
    _, mat = landmark_system((2, 3), 17, dtype)
    upstream = torch.randn(mat.shape, dtype=dtype,
                           generator=torch.Generator().manual_seed(1))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(
        rtol=1e-3, atol=1e-3)
    for a in (mat, mat[0, 0]):
        grads = []
        for steps in (newton_schulz_steps, newton_schulz_steps_reference):
            leaf = a.clone().requires_grad_()
            out = steps(back_off_start(leaf).expand(mat.shape), leaf, 20)
            grads.append(torch.autograd.grad(out, leaf, upstream)[0])
        assert grads[0].abs().amax() > 0
        torch.testing.assert_close(grads[0], grads[1], **tol)


def test_training_keeps_only_the_inputs():
    """The GEMM form keeps V and V A of every step for backward; the
    kernel's node keeps V0 and A."""
    _, mat = landmark_system((4, ), 49)

    def saved_bytes(steps):
        storages = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return t

        leaf = mat.clone().requires_grad_()
        start = back_off_start(leaf)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            steps(start, leaf, 20)
        return sum(storages.values())

    stack = mat.numel() * mat.element_size()
    assert saved_bytes(newton_schulz_steps) == 2 * stack
    assert saved_bytes(newton_schulz_steps_reference) >= 2 * 20 * stack


def test_gradcheck_through_the_kernel(counting):
    inv, mat = landmark_system((2, ), 6, torch.float64)
    inv, mat = inv.requires_grad_(), mat.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, a: newton_schulz_steps(v, a, 3), (inv, mat))
    assert counting.calls > 0


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r'square matrices \(\.\.\., m, m\)'):
        newton_schulz_steps(torch.randn(2, 3, 4), torch.randn(2, 3, 4), 2)
    inv, mat = landmark_system((2, ), 5)
    with pytest.raises(ValueError, match='of one shape'):
        ext_module.newton_schulz_steps(inv, mat[:1], 2)
    with pytest.raises(TypeError, match='cast them to one dtype'):
        ext_module.newton_schulz_steps(inv, mat.double(), 2)
    with pytest.raises(TypeError, match='expected Float or Double'):
        ext_module.newton_schulz_steps(inv.half(), mat.half(), 2)
    with pytest.raises(ValueError, match='num_iter must be >= 0'):
        ext_module.newton_schulz_steps(inv, mat, -1)
