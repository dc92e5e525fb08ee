# Copyright (c) mmlinattn contributors. All rights reserved.
"""Deformable token merging: the DCN op and its ONNX decomposition."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from mmlinattn.models.backbones.litv2 import (DeformableConv2d,
                                              DeformableTokenMerging,
                                              deform_conv2d_gather,
                                              deform_conv2d_pytorch)


def bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """DCNv1 sampling rule (spec §3.3): 0 outside (-1, H) x (-1, W), each
    out-of-range corner counted as 0."""
    C, H, W = img.shape
    if y <= -1 or y >= H or x <= -1 or x >= W:
        return img.new_zeros(C)
    y0, x0 = math.floor(y), math.floor(x)
    out = img.new_zeros(C)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * img[:, yy, xx]
    return out


def dcn_reference(x, offset, weight, bias, stride=2):
    B, C, H, W = x.shape
    C_out, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[-2:]
    out = x.new_zeros(B, C_out, Ho, Wo)
    for b in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                acc = bias.clone()
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = oy * stride + i + offset[b, 2 * k, oy, ox].item()
                        xx = ox * stride + j + offset[b, 2 * k + 1, oy,
                                                      ox].item()
                        acc += weight[:, :, i, j] @ bilinear(x[b], y, xx)
                out[b, :, oy, ox] = acc
    return out


def random_dcn(C=3, C_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(C_out, C, 2, 2, generator=g, dtype=torch.float64)
    bias = torch.randn(C_out, generator=g, dtype=torch.float64)
    return weight, bias


@pytest.mark.parametrize('hw', [(6, 8), (7, 5)])
def test_zero_offset_is_strided_conv(hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    weight, bias = random_dcn()
    Ho, Wo = hw[0] // 2, hw[1] // 2  # odd sides floor
    offset = torch.zeros(2, 8, Ho, Wo, dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride=2)
    for fn in (deform_conv2d, deform_conv2d_pytorch, deform_conv2d_gather):
        out = fn(x, offset, weight, bias, stride=(2, 2), padding=(0, 0))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize('dy, dx', [(0, 1), (1, 0), (-1, 0), (1, -1)])
def test_integer_offset_is_shifted_conv(dy, dx):
    """A constant integer offset (dy, dx) samples x[y + dy, x + dx]: a conv
    of the map shifted by (-dy, -dx) with zeros shifted in."""
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    weight, bias = random_dcn()
    offset = torch.zeros(2, 4, 2, 3, 4, dtype=torch.float64)
    offset[:, :, 0], offset[:, :, 1] = dy, dx
    offset = offset.view(2, 8, 3, 4)
    shifted = torch.zeros_like(x)
    H, W = x.shape[-2:]
    shifted[..., max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)] = \
        x[..., max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)]
    expected = F.conv2d(shifted, weight, bias, stride=2)
    for fn in (deform_conv2d, deform_conv2d_pytorch, deform_conv2d_gather):
        out = fn(x, offset, weight, bias, stride=(2, 2), padding=(0, 0))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize('hw', [(4, 6), (5, 7)])
def test_fractional_and_out_of_range_offsets(hw):
    """torchvision's op and our ONNX decomposition against a direct
    bilinear evaluation, offsets reaching past every border."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    weight, bias = random_dcn()
    Ho, Wo = hw[0] // 2, hw[1] // 2
    offset = (torch.rand(2, 8, Ho, Wo, dtype=torch.float64) - 0.5) * 6
    offset[0, 0, 0, 0] = -1.  # exactly on the border: zero
    offset[0, 3, 0, 0] = -1.5
    expected = dcn_reference(x, offset, weight, bias)
    for fn in (deform_conv2d, deform_conv2d_pytorch, deform_conv2d_gather):
        out = fn(x, offset, weight, bias, stride=(2, 2), padding=(0, 0))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_decomposition_gradients_match_torchvision():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    weight, bias = random_dcn()
    offset = (torch.rand(2, 8, 3, 3, dtype=torch.float64) - 0.5) * 3
    grads = []
    for fn in (deform_conv2d, deform_conv2d_pytorch, deform_conv2d_gather):
        inputs = [
            t.clone().requires_grad_() for t in (x, offset, weight, bias)
        ]
        out = fn(*inputs, stride=(2, 2), padding=(0, 0))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(
            out)).sum().backward()
        grads.append([t.grad for t in inputs])
    for ours in grads[1:]:
        for g_ours, g_tv in zip(ours, grads[0]):
            torch.testing.assert_close(g_ours, g_tv, rtol=1e-9, atol=1e-9)


def test_module_layout_and_init():
    dtm = DeformableTokenMerging(8, 16)
    shapes = {k: tuple(v.shape) for k, v in dtm.state_dict().items()}
    assert shapes == {
        'dconv.weight': (16, 8, 2, 2),
        'dconv.bias': (16, ),
        'dconv.conv_offset.weight': (8, 8, 2, 2),
        'dconv.conv_offset.bias': (8, ),
        'norm_layer.weight': (16, ),
        'norm_layer.bias': (16, ),
        'norm_layer.running_mean': (16, ),
        'norm_layer.running_var': (16, ),
        'norm_layer.num_batches_tracked': (),
    }
    assert torch.count_nonzero(dtm.dconv.conv_offset.weight) == 0
    assert torch.count_nonzero(dtm.dconv.conv_offset.bias) == 0
    bound = 1 / math.sqrt(8 * 4)
    assert dtm.dconv.bias.abs().max() <= bound


def test_dtm_forward_floors_odd_sides():
    dtm = DeformableTokenMerging(8, 16).eval()
    x = torch.randn(2, 7 * 5, 8)
    out, hw = dtm(x, (7, 5))
    assert hw == (3, 2) and out.shape == (2, 6, 16)
    with torch.no_grad():
        conv = F.conv2d(
            x.transpose(1, 2).reshape(2, 8, 7, 5), dtm.dconv.weight,
            dtm.dconv.bias, stride=2)
        expected = F.gelu(dtm.norm_layer(conv)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('batch', [1, 3, 5, 7])
def test_odd_batch_sizes(batch):
    """The official op fails for odd batches >= 5 (im2col_step = bs // 2);
    ours gives each sample the result it gets alone."""
    torch.manual_seed(0)
    dcn = DeformableConv2d(4, 8)
    with torch.no_grad():
        dcn.conv_offset.weight.normal_(std=0.5)
    x = torch.randn(batch, 4, 6, 10)
    out = dcn(x)
    single = torch.cat([dcn(x[i:i + 1]) for i in range(batch)])
    torch.testing.assert_close(out, single)


def test_cpu_runs_the_gather_decomposition_and_tracing_keeps_torchvisions_op(
):
    """On CPU the module gathers the bilinear corners itself (faster there
    than torchvision's kernel, forward and backward); traced graphs (FLOP
    counts) keep torchvision's op. Both give torchvision's values."""
    torch.manual_seed(0)
    dcn = DeformableConv2d(4, 8).double()
    with torch.no_grad():
        dcn.conv_offset.weight.normal_(std=0.5)
    x = torch.randn(3, 4, 6, 10, dtype=torch.float64)
    with torch.profiler.profile() as prof:
        out = dcn(x)
    ops = {e.name for e in prof.events()}
    assert 'aten::index_select' in ops
    assert 'torchvision::deform_conv2d' not in ops
    expected = deform_conv2d(x, dcn.conv_offset(x), dcn.weight, dcn.bias,
                             stride=(2, 2))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    traced = torch.jit.trace(dcn, x)
    assert 'torchvision::deform_conv2d' in str(traced.inlined_graph)
    torch.testing.assert_close(traced(x), expected, rtol=0, atol=1e-12)


def test_gather_decomposition_keeps_torchvisions_gradient_at_zero_offsets():
    """DTM starts from zero offsets, i.e. integer sample positions, where
    bilinear sampling has a kink: torchvision (like the official mmcv op)
    takes the derivative towards ``floor(p) + 1``. The gather decomposition
    does too; the grid_sample one (ONNX only) may not."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12, 14, dtype=torch.float64)
    weight, bias = torch.randn(7, 5, 2, 2, dtype=torch.float64), None
    upstream = torch.randn(2, 7, 6, 7, dtype=torch.float64)
    grads = []
    for fn in (deform_conv2d, deform_conv2d_gather):
        offset = torch.zeros(2, 8, 6, 7, dtype=torch.float64,
                             requires_grad=True)
        out = fn(x, offset, weight, bias, stride=(2, 2), padding=(0, 0))
        grads.append(torch.autograd.grad(out, offset, upstream)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)


def test_gather_decomposition_keeps_about_the_input_for_backward():
    """Training keeps the padded map, corner indices and fractions, not the
    four gathered corners nor the sampled columns (each input-sized)."""
    torch.manual_seed(0)
    dcn = DeformableConv2d(16, 32)
    x = torch.randn(2, 16, 24, 24, requires_grad=True)
    offset = dcn.conv_offset(x).detach().requires_grad_()
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = deform_conv2d_gather(x, offset, dcn.weight, dcn.bias, (2, 2),
                                   (0, 0))
    padded = 2 * 16 * 28 * 28 * 4
    assert sum(saved.values()) < padded * 1.5
    out.sum().backward()
    assert x.grad is not None and offset.grad is not None
