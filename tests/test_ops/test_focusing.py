# Copyright (c) mmlinattn contributors. All rights reserved.
"""The fused focusing-function kernel of mmlinattn._ext against its
PyTorch reference (values, gradients, dispatch, errors)."""
import pytest
import torch

from mmlinattn.models.attention import FocusedLinearAttention
from mmlinattn.ops import (focusing_backend, focusing_function,
                           focusing_function_reference, reference_ops)
from mmlinattn.ops.ext_loader import ext_module

pytestmark = pytest.mark.needs_ext_op('focusing_forward')

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12)
}


def inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    scale = torch.rand(1, 1, shape[-1], generator=g, dtype=dtype) + 0.5
    return x, scale


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('p', [3., 2.5, 0.5])
@pytest.mark.parametrize('shape', [(2, 37, 70), (3, 5, 16), (1, 9, 3)])
def test_fused_matches_reference(dtype, p, shape):
    x, scale = inputs(shape, dtype)
    x.requires_grad_()
    scale.requires_grad_()
    assert focusing_backend(x, scale) == 'extension'
    fused = focusing_function(x, scale, p)
    reference = focusing_function_reference(x, scale, p)
    torch.testing.assert_close(fused, reference, **TOL[dtype])
    # seeded: the fp32 scale gradient sums rows with cancellation, so its
    # error depends on the draw (the global RNG depends on earlier tests)
    upstream = torch.randn(
        fused.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    for a, b in zip(
            torch.autograd.grad(fused, (x, scale), upstream),
            torch.autograd.grad(reference, (x, scale), upstream)):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_fused_gradcheck_and_input_only_gradient():
    x, scale = inputs((2, 6, 20), torch.float64)
    x.requires_grad_()
    scale.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, s: focusing_function(x, s, 3.), (x, scale))
    frozen = scale.detach()
    grad, = torch.autograd.grad(focusing_function(x, frozen, 3.).sum(), x)
    expected, = torch.autograd.grad(
        focusing_function_reference(x, frozen, 3.).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_strided_rows_of_a_fused_qkv():
    """q of ``qkv(x).chunk(3, -1)`` is read in place (row stride 3C)."""
    qkv, scale = inputs((2, 50, 3 * 64), torch.float32)
    q = qkv.chunk(3, dim=-1)[0]
    assert not q.is_contiguous()
    torch.testing.assert_close(
        focusing_function(q, scale[..., :64], 3.),
        focusing_function_reference(q.contiguous(), scale[..., :64], 3.),
        **TOL[torch.float32])


def test_scale_gradient_does_not_depend_on_the_threads():
    x, scale = inputs((4, 300, 32), torch.float32)
    x.requires_grad_()
    scale.requires_grad_()
    upstream = torch.randn(4, 300, 32)
    threads = torch.get_num_threads()
    grads = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            grads.append(
                torch.autograd.grad(
                    focusing_function(x, scale, 3.), (x, scale), upstream))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_dispatch_falls_back_to_the_reference():
    x, scale = inputs((2, 4, 8), torch.float32)
    assert focusing_backend(x.half(), scale.half()) == 'reference'
    assert focusing_backend(x, torch.rand(2, 4, 8) + 0.5) == 'reference'
    assert focusing_backend(x, torch.tensor(1.5)) == 'reference'
    torch.testing.assert_close(
        focusing_function(x, torch.tensor(1.5), 3.),
        focusing_function(x, torch.full((8, ), 1.5), 3.))
    with reference_ops():
        assert focusing_backend(x, scale) == 'reference'
    half = focusing_function(x.half(), scale.half(), 3.)
    assert half.dtype == torch.float16
    torch.testing.assert_close(
        half.float(), focusing_function(x, scale, 3.), rtol=2e-3, atol=2e-3)


def test_attention_output_with_and_without_the_kernel():
    layer = FocusedLinearAttention(64, 2, key_grid=(6, 5))
    torch.nn.init.normal_(layer.scale, std=0.5)
    x = torch.randn(2, 30, 64)
    fused = layer(x, (6, 5))
    with reference_ops():
        reference = layer(x, (6, 5))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def test_errors_name_the_fix():
    x, scale = inputs((5, 8), torch.float32)
    with pytest.raises(ValueError, match=r'scale \(C,\)'):
        ext_module.focusing_forward(x, scale.view(8)[:3], 3.)
    with pytest.raises(ValueError, match='finite and > 0'):
        ext_module.focusing_forward(x, scale.view(8), -1.)
    with pytest.raises(TypeError, match='cast half precision'):
        ext_module.focusing_forward(x.half(), scale.view(8).half(), 3.)
