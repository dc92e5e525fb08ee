# Copyright (c) mmlinattn contributors. All rights reserved.
"""The fused focused linear attention of mmlinattn._ext, forward and
backward, against the composition of the focusing function and the
normalised products (values and gradients, head and block sizes around the
vector and tile widths, strided inputs, dispatch, determinism, errors)."""
import pytest
import torch

from mmlinattn.ops import (focused_linear_attention,
                           focused_linear_attention_backward,
                           focused_linear_attention_backward_reference,
                           focused_linear_attention_reference, reference_ops)
from mmlinattn.ops import focused_linear as fl
from mmlinattn.ops.ext_loader import ext_module

pytestmark = pytest.mark.needs_ext_op('focused_linear_forward')

TOL = {
    torch.float32: dict(rtol=2e-5, atol=1e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14)
}

GRAD_ATOL = {torch.float32: 1e-5, torch.float64: 1e-13}


def inputs(B, N, n, C, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(B, m, C, generator=g, dtype=dtype) for m in (N, n, n))
    scale = torch.rand(1, 1, C, generator=g, dtype=dtype) + 0.5
    return q, k, v, scale


@pytest.fixture
def counting(count_ext_calls):
    return count_ext_calls(fl, 'focused_linear_forward')


def assert_matches_reference(q, k, v, scale, p, heads):
    got = focused_linear_attention(q, k, v, scale, p, heads)
    want = focused_linear_attention_reference(q, k, v, scale, p, heads)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, **TOL[q.dtype])


SHAPES = pytest.mark.parametrize(
    'B, N, n, C, heads',
    [
        (1, 196, 196, 64, 1),  # PVT stage 1 (d = 64: whole vectors)
        (2, 49, 49, 96, 3),  # Swin (d = 32)
        (2, 37, 300, 40, 2),  # d = 20: a padded last vector; n > N
        (3, 300, 17, 48, 2),  # more query blocks than key blocks
        (1, 5, 9, 512, 8),  # rows per block at its lower bound
        (2, 7, 3, 6, 6),  # d = 1
        (1, 513, 513, 16, 1),  # blocks of 256 rows and a remainder
        (1, 40, 300, 256, 1),  # one wide head: key blocks of ld rows
    ])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@SHAPES
def test_kernel_matches_composition(counting, dtype, B, N, n, C, heads):
    """out, the key-value product with its mean column and the normaliser
    equal the composition's up to float rounding."""
    assert_matches_reference(*inputs(B, N, n, C, dtype), 3., heads)
    assert counting.calls == 1


@pytest.mark.parametrize('p', [2.5, 1., 7.])
def test_other_focusing_factors(counting, p):
    assert_matches_reference(*inputs(2, 50, 30, 64, torch.float64), p, 2)
    assert counting.calls == 1


def test_strided_views_and_per_channel_scale(counting):
    """q, k, v as the chunks of one qkv projection (row stride 3C) and a
    (C,) scale give what contiguous copies give."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 64, 3 * 32, generator=g)
    q, k, v = qkv.chunk(3, dim=-1)
    scale = torch.rand(32, generator=g) + 0.5
    got = focused_linear_attention(q, k, v, scale, 3., 2)
    want = focused_linear_attention(q.contiguous(), k.contiguous(),
                                    v.contiguous(), scale.view(1, 1, 32), 3.,
                                    2)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert counting.calls == 2


def same_for_one_and_many_threads(counter, op, *args):
    """Asserts op(*args) is bitwise the same on one thread and on several,
    both times from the kernel that ``counter`` counts."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(*args)
        torch.set_num_threads(max(2, threads))
        many = op(*args)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)
    assert counter.calls == 2


def test_result_does_not_depend_on_the_threads(counting):
    same_for_one_and_many_threads(counting, focused_linear_attention,
                                  *inputs(2, 700, 700, 64), 3., 2)


def test_empty_queries_and_batch(counting):
    for B, N in ((2, 0), (0, 5)):
        q, k, v, scale = inputs(B, N, 4, 8)
        out, kv, normaliser = focused_linear_attention(q, k, v, scale, 3., 2)
        assert out.shape == (B, N, 8) and kv.shape == (B, 2, 4, 5)
        assert normaliser.shape == (B, 2, N, 1)
    q, k, v, scale = inputs(2, 0, 4, 8)
    torch.testing.assert_close(
        focused_linear_attention(q, k, v, scale, 3., 2)[1],
        focused_linear_attention_reference(q, k, v, scale, 3., 2)[1])


def test_dispatch(counting):
    """The kernel runs when autograd does not record; with gradients, in
    reference_ops(), for half precision, under autocast and without keys
    the composition runs."""
    q, k, v, scale = inputs(1, 16, 16, 8)
    focused_linear_attention(q, k, v, scale, 3., 2)
    assert counting.calls == 1
    q.requires_grad_()
    out = focused_linear_attention(q, k, v, scale, 3., 2)[0]
    assert counting.calls == 1 and out.requires_grad
    with torch.no_grad():
        focused_linear_attention(q, k, v, scale, 3., 2)
    assert counting.calls == 2
    q = q.detach()
    with reference_ops():
        focused_linear_attention(q, k, v, scale, 3., 2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        focused_linear_attention(q, k, v, scale, 3., 2)
    focused_linear_attention(*(t.to(torch.bfloat16) for t in (q, k, v)),
                             scale.to(torch.bfloat16), 3., 2)
    focused_linear_attention(q, k[:, :0], v[:, :0], scale, 3., 2)
    assert counting.calls == 2


def test_forward_mode_ad_takes_the_composition(counting):
    """A dual tensor carries a tangent without requires_grad: the kernel,
    which has no derivative, must not drop it. The composition raises where
    the fused focusing kernel has no forward-mode formula, and gives the
    tangent with the reference ops."""
    import torch.autograd.forward_ad as fwAD
    q, k, v, scale = inputs(1, 6, 5, 8, torch.float64)
    tangent = torch.randn_like(q)

    def attention_tangent():
        with fwAD.dual_level():
            out = focused_linear_attention(
                fwAD.make_dual(q, tangent), k, v, scale, 3., 2)[0]
            return fwAD.unpack_dual(out).tangent

    with pytest.raises(NotImplementedError, match='jvp'):
        attention_tangent()
    with reference_ops():
        got = attention_tangent()
    eps = 1e-6  # central difference in float64
    want = (focused_linear_attention_reference(q + eps * tangent, k, v, scale,
                                               3., 2)[0] -
            focused_linear_attention_reference(q - eps * tangent, k, v, scale,
                                               3., 2)[0]) / (2 * eps)
    assert counting.calls == 0
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_layer_forward_uses_the_kernel(counting):
    """FLatten's attention takes the kernel without gradients and inside
    its one-node core with them; the outputs match the reference ops."""
    from mmlinattn.models.attention import FocusedLinearAttention
    layer = FocusedLinearAttention(64, 2, key_grid=(7, 7)).eval()
    torch.nn.init.normal_(layer.positional_encoding, std=0.5)
    x = torch.randn(2, 49, 64)
    with torch.no_grad():
        got = layer(x, (7, 7))
        assert counting.calls == 1
        with reference_ops():
            want = layer(x, (7, 7))
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    layer(x, (7, 7)).sum().backward()
    assert counting.calls == 2
    assert layer.scale.grad is not None and layer.qkv.weight.grad is not None


def test_errors_name_the_fix():
    q, k, v, scale = inputs(1, 4, 4, 8)
    s = scale.view(8)
    with pytest.raises(ValueError, match='heads do not divide'):
        focused_linear_attention(q, k, v, scale, 3., 3)
    ext = ext_module.focused_linear_forward
    with pytest.raises(ValueError, match=r'expected q \(B, N, C\)'):
        ext(q, k[:, :, :4], v, s, 3., 2)
    with pytest.raises(ValueError, match='at least one channel'):
        ext(q[..., :0], k[..., :0], v[..., :0], s[:0], 3., 1)
    with pytest.raises(ValueError, match='at least one key'):
        ext(q, k[:, :0], v[:, :0], s, 3., 2)
    with pytest.raises(ValueError, match='focusing factor p must be finite'):
        ext(q, k, v, s, 0., 2)
    with pytest.raises(TypeError, match='cast them to one dtype'):
        ext(q, k.double(), v, s, 3., 2)
    with pytest.raises(TypeError, match='expected Float or Double'):
        ext(q.half(), k.half(), v.half(), s.half(), 3., 2)


@pytest.fixture
def counting_backward(count_ext_calls):
    return count_ext_calls(fl, 'focused_linear_backward')


def backward_inputs(B, N, n, C, heads, dtype=torch.float32, p=3.):
    """The forward's inputs, kv and normaliser, and an upstream gradient."""
    q, k, v, scale = inputs(B, N, n, C, dtype)
    with reference_ops():  # not from the kernels under test
        _, kv, normaliser = focused_linear_attention_reference(
            q, k, v, scale, p, heads)
    grad = torch.randn(B, N, C, dtype=dtype,
                       generator=torch.Generator().manual_seed(2))
    return grad, q, k, v, scale, kv, normaliser, p, heads


def assert_backward_matches_reference(*args, need_scale=True):
    got = focused_linear_attention_backward(*args, need_scale)
    with reference_ops():  # the focusing backward in PyTorch operations too
        want = focused_linear_attention_backward_reference(*args, need_scale)
    for a, b in zip(got, want):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape and a.dtype == b.dtype
        # gradients sum over many more terms: absolute tolerance relative to
        # the tensor's largest entry
        torch.testing.assert_close(
            a, b, rtol=TOL[b.dtype]['rtol'],
            atol=GRAD_ATOL[b.dtype] * float(b.abs().max()) if b.numel() else 0.)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@SHAPES
def test_backward_kernel_matches_composition(counting_backward, dtype, B, N,
                                             n, C, heads):
    """The gradients of q, k, v and scale equal the composition's up to
    float rounding."""
    assert_backward_matches_reference(
        *backward_inputs(B, N, n, C, heads, dtype))
    assert counting_backward.calls == 1


@pytest.mark.parametrize('p', [2.5, 1., 7.])
def test_backward_other_focusing_factors(counting_backward, p):
    assert_backward_matches_reference(
        *backward_inputs(2, 50, 30, 64, 2, torch.float64, p))
    assert counting_backward.calls == 1


def test_core_gradients_pass_gradcheck(counting_backward):
    """FLatten's one-node core, both ways on the kernels, against numerical
    derivatives in float64 (q, k, v and the scale)."""
    from mmlinattn.models.attention.focused_linear_attention import \
        _FocusedLinearCore
    q, k, v, scale = (t.requires_grad_()
                      for t in inputs(2, 9, 6, 12, torch.float64))
    assert torch.autograd.gradcheck(
        lambda *t: _FocusedLinearCore.apply(*t, 3., 2), (q, k, v, scale))
    assert counting_backward.calls > 0


def test_core_backward_follows_the_forward(counting_backward,
                                           count_ext_calls):
    """A forward of FLatten's core inside reference_ops() gets the reference
    backward (no compiled focusing either) even when backward runs outside
    it; a forward outside it gets the kernel."""
    from mmlinattn.models.attention.focused_linear_attention import \
        _FocusedLinearCore
    from mmlinattn.ops import focusing
    focusing_calls = count_ext_calls(focusing, 'focusing_backward')
    q, k, v, scale = (t.requires_grad_() for t in inputs(1, 9, 6, 8))
    with reference_ops():
        out = _FocusedLinearCore.apply(q, k, v, scale, 3., 2)
    out.sum().backward()
    assert counting_backward.calls == 0 and focusing_calls.calls == 0
    _FocusedLinearCore.apply(q, k, v, scale, 3., 2).sum().backward()
    assert counting_backward.calls == 1


def test_backward_strided_inputs_and_no_scale(counting_backward):
    """q, k, v as chunks of one qkv tensor and a transposed upstream
    gradient give what contiguous copies give; without need_scale the
    scale's gradient is None."""
    grad, q, k, v, scale, kv, normaliser, p, heads = backward_inputs(
        2, 64, 64, 32, 2)
    qkv = torch.cat([q, k, v], dim=-1)
    grad_t = grad.transpose(0, 1).contiguous().transpose(0, 1)
    got = focused_linear_attention_backward(grad_t, *qkv.chunk(3, dim=-1),
                                            scale.view(32), kv, normaliser,
                                            p, heads, need_scale=False)
    want = focused_linear_attention_backward(grad, q, k, v, scale, kv,
                                             normaliser, p, heads)
    assert got[3] is None and want[3].shape == scale.shape
    for a, b in zip(got[:3], want[:3]):
        assert torch.equal(a, b)
    assert counting_backward.calls == 2


def test_backward_does_not_depend_on_the_threads(counting_backward):
    same_for_one_and_many_threads(counting_backward,
                                  focused_linear_attention_backward,
                                  *backward_inputs(2, 700, 700, 64, 2))


def test_backward_empty_queries_and_batch(counting_backward):
    for B, N in ((2, 0), (0, 5)):
        assert_backward_matches_reference(*backward_inputs(B, N, 4, 8, 2))
    assert counting_backward.calls == 2


def test_backward_dispatch(counting_backward):
    """reference_ops() and half precision take the composition."""
    args = backward_inputs(1, 16, 16, 8, 2)
    with reference_ops():
        focused_linear_attention_backward(*args)
    half = [t.to(torch.bfloat16) if torch.is_tensor(t) else t for t in args]
    focused_linear_attention_backward(*half)
    assert counting_backward.calls == 0
    focused_linear_attention_backward(*args)
    assert counting_backward.calls == 1


def test_layer_backward_uses_the_kernel(counting_backward):
    """FLatten's attention trains through the backward kernel, with the
    gradients of the reference ops."""
    from mmlinattn.models.attention import FocusedLinearAttention
    layer = FocusedLinearAttention(64, 2, key_grid=(7, 7))
    torch.nn.init.normal_(layer.positional_encoding, std=0.5)
    torch.nn.init.normal_(layer.scale, std=0.5)
    x = torch.randn(2, 49, 64)

    def gradients():
        layer.zero_grad()
        layer(x, (7, 7)).square().sum().backward()
        return {n: p.grad.clone() for n, p in layer.named_parameters()}

    got = gradients()
    assert counting_backward.calls == 1
    with reference_ops():
        want = gradients()
    assert counting_backward.calls == 1
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_backward_errors_name_the_fix():
    grad, q, k, v, scale, kv, normaliser, p, heads = backward_inputs(
        1, 4, 4, 8, 2)
    s = scale.view(8)
    ext = ext_module.focused_linear_backward
    with pytest.raises(ValueError, match='z \\(B, h, N, 1\\) of the forward'):
        ext(grad, q, k, v, s, kv, normaliser[:, :1], p, heads, True)
    with pytest.raises(ValueError, match='kv \\(B, h, d, d \\+ 1\\)'):
        ext(grad, q, k, v, s, kv[..., :4], normaliser, p, heads, True)
    with pytest.raises(ValueError, match='expected grad'):
        ext(grad[:, :3], q, k, v, s, kv, normaliser, p, heads, True)
    with pytest.raises(ValueError, match='heads do not divide'):
        ext(grad, q, k, v, s, kv, normaliser, p, 3, True)
    with pytest.raises(TypeError, match='cast them to one dtype'):
        ext(grad.double(), q, k, v, s, kv, normaliser, p, heads, True)
    with pytest.raises(TypeError, match='cast them to one dtype'):
        focused_linear_attention_backward(grad, q, k, v, scale, kv,
                                          normaliser.double(), p, heads)
