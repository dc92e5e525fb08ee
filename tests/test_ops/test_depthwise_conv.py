# Copyright (c) mmlinattn contributors. All rights reserved.
"""The compiled depthwise-conv weight gradient of mmlinattn._ext against
oneDNN's (values, layouts, dispatch, determinism, errors)."""
import pytest
import torch
import torch.nn.functional as F

from mmlinattn.ops import depthwise_conv2d, reference_ops
from mmlinattn.ops.depthwise_conv import depthwise_conv2d_weight_grad

pytestmark = pytest.mark.needs_ext_op('depthwise_conv2d_weight_grad')

TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-4),
    torch.float64: dict(rtol=1e-12, atol=1e-11)
}


def aten_weight_grad(grad, x, kernel, padding):
    weight = torch.zeros(x.shape[1], 1, *kernel, dtype=x.dtype)
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1],
                                               list(padding), [1, 1], False,
                                               [0, 0], x.shape[1],
                                               [False, True, False])[1]


def channels_last_pair(shape, kernel, padding, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    out_hw = (H + 2 * padding[0] - kernel[0] + 1,
              W + 2 * padding[1] - kernel[1] + 1)
    x = torch.randn(B, H, W, C, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    grad = torch.randn(B, *out_hw, C, generator=g,
                       dtype=dtype).permute(0, 3, 1, 2)
    return grad, x


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize(
    'shape,kernel,padding',
    [
        ((2, 32, 9, 11), (5, 5), (2, 2)),  # FLatten's DWC: register path
        ((3, 20, 7, 6), (5, 5), (2, 2)),  # channels not a vector multiple
        ((1, 48, 5, 8), (3, 3), (1, 1)),  # 3 x 3
        ((2, 17, 6, 9), (3, 5), (1, 2)),  # any other kernel: generic path
        ((1, 16, 8, 8), (7, 7), (3, 3)),
        ((2, 24, 6, 7), (5, 5), (0, 0)),  # smaller output
        ((1, 8, 4, 5), (3, 3), (2, 2)),  # larger output
        ((1, 3, 2, 2), (5, 5), (2, 2)),  # map smaller than the kernel
    ])
def test_weight_grad_matches_onednn(dtype, shape, kernel, padding):
    grad, x = channels_last_pair(shape, kernel, padding, dtype)
    torch.testing.assert_close(
        depthwise_conv2d_weight_grad(grad, x, kernel, padding),
        aten_weight_grad(grad, x, kernel, padding), **TOL[dtype])


def test_weight_grad_any_layout_and_deterministic():
    """Channels-first memory is made channels-last; a strided token view
    (V of a fused k|v projection) is read in place; the result does not
    depend on the thread count."""
    grad, x = channels_last_pair((2, 32, 12, 10), (5, 5), (2, 2),
                                 torch.float64)
    expected = aten_weight_grad(grad, x, (5, 5), (2, 2))
    for g, inp in ((grad.contiguous(), x.contiguous()),
                   (grad, torch.cat([x, x + 1], 1)[:, :32])):
        torch.testing.assert_close(
            depthwise_conv2d_weight_grad(g, inp, (5, 5), (2, 2)), expected,
            **TOL[torch.float64])
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(
                depthwise_conv2d_weight_grad(grad.float(), x.float(), (5, 5),
                                             (2, 2)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(*results)


@pytest.mark.parametrize('kernel,padding', [((5, 5), (2, 2)),
                                            ((3, 5), (0, 2)),
                                            ((5, 5), (4, 3))])
@pytest.mark.parametrize('frozen', [(), ('weight', 'bias'), ('x', )])
def test_op_matches_conv2d(frozen, kernel, padding):
    """Forward bit for bit, every requested gradient as autograd's
    ``F.conv2d`` (same-size, smaller and larger outputs); gradcheck in
    fp64."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 20, 5, 6, generator=g, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(20, 1, *kernel, generator=g, dtype=torch.float64)
    bias = torch.randn(20, generator=g, dtype=torch.float64)
    tensors = dict(x=x, weight=weight, bias=bias)
    for name, t in tensors.items():
        t.requires_grad_(name not in frozen)
    needs = [t for t in tensors.values() if t.requires_grad]
    out = depthwise_conv2d(x, weight, bias, padding)
    assert type(out.grad_fn).__name__ == '_DepthwiseConv2dBackward'
    plain = F.conv2d(x, weight, bias, padding=padding, groups=20)
    assert torch.equal(out, plain)
    upstream = torch.randn_like(out)
    for a, b in zip(
            torch.autograd.grad(out, needs, upstream),
            torch.autograd.grad(plain, needs, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if not frozen:
        assert torch.autograd.gradcheck(
            lambda *ts: depthwise_conv2d(*ts, padding), (x, weight, bias))


def test_dispatch():
    """The compiled gradient only where it beats oneDNN (not 3 x 3), only
    with gradients, for CPU tensors, outside autocast and
    ``reference_ops``."""
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    w5, w3, b = torch.randn(8, 1, 5, 5), torch.randn(8, 1, 3, 3), None

    def node(*args):
        out = depthwise_conv2d(*args)
        return None if out.grad_fn is None else type(out.grad_fn).__name__

    assert node(x, w5, b, (2, 2)) == '_DepthwiseConv2dBackward'
    assert node(x, w3, b, (1, 1)) == 'ConvolutionBackward0'
    assert node(x, w5, b, (5, 5)) == 'ConvolutionBackward0'  # pad >= kernel
    assert node(x.detach(), w5, b, (2, 2)) is None
    with torch.no_grad():
        assert node(x, w5, b, (2, 2)) is None
    with reference_ops():
        assert node(x, w5, b, (2, 2)) == 'ConvolutionBackward0'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert node(x, w5, b, (2, 2)) == 'ConvolutionBackward0'
    meta = x.detach().to('meta').requires_grad_()
    assert node(meta, w5.to('meta'), b, (2, 2)) == 'ConvolutionBackward0'


def test_errors_name_the_fix():
    x = torch.randn(1, 8, 6, 6)
    with pytest.raises(ValueError, match=r'\(C, 1, kh, kw\) weight for 8'):
        depthwise_conv2d(x, torch.randn(8, 2, 5, 5), None, (2, 2))
    grad, x = channels_last_pair((1, 8, 6, 6), (5, 5), (2, 2), torch.float32)
    with pytest.raises(ValueError, match='is not the output of a 5x5'):
        depthwise_conv2d_weight_grad(grad, x, (5, 5), (1, 1))
    with pytest.raises(TypeError, match='cast them to one dtype'):
        depthwise_conv2d_weight_grad(grad.double(), x, (5, 5), (2, 2))
    with pytest.raises(TypeError, match='expected Float or Double'):
        depthwise_conv2d_weight_grad(grad.half(), x.half(), (5, 5), (2, 2))
