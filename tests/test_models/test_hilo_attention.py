# Copyright (c) mmlinattn contributors. All rights reserved.
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmlinattn.models.attention import HiLoAttention
from mmlinattn.registry import MODELS


def hilo_reference(attn: HiLoAttention, x: torch.Tensor, H: int,
                   W: int) -> torch.Tensor:
    """Direct evaluation of the HiLo formula (spec §2.3-2.4): loops over
    windows and heads, explicit zero padding, pooling by averaging."""
    B, N, C = x.shape
    ws, hd, scale = attn.window_size, attn.head_dims, attn.scale
    Hp, Wp = ws * math.ceil(H / ws), ws * math.ceil(W / ws)
    grid = x.new_zeros(B, Hp, Wp, C)
    grid[:, :H, :W] = x.reshape(B, H, W, C)
    parts = []
    if attn.h_heads:
        h_dim = attn.h_dim
        qkv = grid @ attn.h_qkv.weight.T + attn.h_qkv.bias
        q, k, v = qkv[..., :h_dim], qkv[..., h_dim:2 * h_dim], qkv[...,
                                                                2 * h_dim:]
        hifi = x.new_zeros(B, Hp, Wp, h_dim)
        for wy in range(Hp // ws):
            for wx in range(Wp // ws):
                rows = slice(wy * ws, (wy + 1) * ws)
                cols = slice(wx * ws, (wx + 1) * ws)
                for h in range(attn.h_heads):
                    ch = slice(h * hd, (h + 1) * hd)
                    qw = q[:, rows, cols, ch].reshape(B, ws * ws, hd)
                    kw = k[:, rows, cols, ch].reshape(B, ws * ws, hd)
                    vw = v[:, rows, cols, ch].reshape(B, ws * ws, hd)
                    a = torch.softmax(qw @ kw.transpose(1, 2) * scale, -1)
                    hifi[:, rows, cols, ch] = (a @ vw).reshape(B, ws, ws, hd)
        hifi = hifi @ attn.h_proj.weight.T + attn.h_proj.bias
        parts.append(hifi[:, :H, :W])
    if attn.l_heads:
        l_dim = attn.l_dim
        pooled = x.new_zeros(B, Hp // ws, Wp // ws, C)
        for i in range(Hp // ws):
            for j in range(Wp // ws):
                pooled[:, i, j] = grid[:, i * ws:(i + 1) * ws,
                                       j * ws:(j + 1) * ws].mean((1, 2))
        q = grid[:, :H, :W] @ attn.l_q.weight.T + attn.l_q.bias
        kv = pooled.reshape(B, -1, C) @ attn.l_kv.weight.T + attn.l_kv.bias
        k, v = kv[..., :l_dim], kv[..., l_dim:]
        lofi = x.new_zeros(B, H, W, l_dim)
        for h in range(attn.l_heads):
            ch = slice(h * hd, (h + 1) * hd)
            qh = q[..., ch].reshape(B, H * W, hd)
            a = torch.softmax(qh @ k[..., ch].transpose(1, 2) * scale, -1)
            lofi[..., ch] = (a @ v[..., ch]).reshape(B, H, W, hd)
        parts.append(lofi @ attn.l_proj.weight.T + attn.l_proj.bias)
    return torch.cat(parts, -1).reshape(B, N, C)


def randomise(module: nn.Module) -> nn.Module:
    """Non-zero biases everywhere, so padded tokens carry the bias (spec
    §2.4: they are not masked)."""
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    return module


@pytest.mark.parametrize(
    'num_heads, alpha, lofi_heads',
    [(12, 0., 0), (12, .2, 2), (12, .4, 4), (12, .5, 6), (12, .7, 8),
     (12, .9, 10), (12, 1., 12), (16, .9, 14)])
def test_head_split_truncates(num_heads, alpha, lofi_heads):
    attn = HiLoAttention(num_heads * 32, num_heads, window_size=2, alpha=alpha)
    assert attn.l_heads == lofi_heads
    assert attn.h_heads == num_heads - lofi_heads
    assert hasattr(attn, 'l_q') == (lofi_heads > 0)
    assert hasattr(attn, 'h_qkv') == (lofi_heads < num_heads)


def test_parameter_layout_litv2_s_stage3():
    attn = HiLoAttention(384, 12, window_size=2, alpha=0.9)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        'l_q.weight': (320, 384), 'l_q.bias': (320, ),
        'l_kv.weight': (640, 384), 'l_kv.bias': (640, ),
        'l_proj.weight': (320, 320), 'l_proj.bias': (320, ),
        'h_qkv.weight': (192, 384), 'h_qkv.bias': (192, ),
        'h_proj.weight': (64, 64), 'h_proj.bias': (64, ),
    }


def test_window_size_one_is_global_msa():
    attn = HiLoAttention(64, 4, window_size=1, alpha=0.25)
    assert (attn.l_heads, attn.h_heads) == (4, 0)
    assert not hasattr(attn, 'h_qkv')
    randomise(attn).double()
    msa = nn.MultiheadAttention(64, 4, batch_first=True).double()
    with torch.no_grad():
        msa.in_proj_weight.copy_(
            torch.cat([attn.l_q.weight, attn.l_kv.weight]))
        msa.in_proj_bias.copy_(torch.cat([attn.l_q.bias, attn.l_kv.bias]))
        msa.out_proj.weight.copy_(attn.l_proj.weight)
        msa.out_proj.bias.copy_(attn.l_proj.bias)
    x = torch.randn(2, 5 * 7, 64, dtype=torch.float64)
    expected, _ = msa(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x, (5, 7)), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    'window_size, alpha, hw',
    [
        (2, 0.9, (6, 8)),  # divisible
        (2, 0.5, (7, 9)),  # odd sides: padded right and bottom
        (4, 0.5, (6, 5)),  # the ws4 detection variant on a 50-row-like map
        (3, 0.5, (7, 8)),
        (4, 0.5, (2, 3)),  # map smaller than one window
        (2, 0.0, (5, 6)),  # Hi-Fi only
        (2, 1.0, (5, 6)),  # Lo-Fi only
        (1, 0.5, (3, 4)),  # global MSA
        (2, 0.5, (18, 17)),  # 81 pooled keys: Lo-Fi on SDPA
        (1, 0.5, (9, 9)),  # global MSA over 81 keys: SDPA
    ])
def test_matches_direct_evaluation_float64(window_size, alpha, hw):
    attn = randomise(HiLoAttention(48, 4, window_size, alpha)).double()
    x = torch.randn(2, hw[0] * hw[1], 48, dtype=torch.float64)
    out = attn(x, hw)
    assert out.shape == x.shape
    torch.testing.assert_close(
        out, hilo_reference(attn, x, *hw), rtol=0, atol=1e-12)


def test_padding_is_not_masked():
    """3x3 map, ws=2: the bottom-right window holds one real token and three
    zero tokens whose keys/values equal the projection biases. They are
    attended to (official behaviour), so the real token does not just copy
    its own value as it would under masking."""
    attn = randomise(HiLoAttention(32, 2, window_size=2, alpha=0.)).double()
    with torch.no_grad():
        attn.h_proj.weight.copy_(torch.eye(32))
        attn.h_proj.bias.zero_()
    x = torch.randn(1, 9, 32, dtype=torch.float64)
    out = attn(x, (3, 3))[0, 8]  # token (2, 2)
    q, k, v = (x[0, 8] @ attn.h_qkv.weight.T + attn.h_qkv.bias).view(3, 2, 16)
    k_pad, v_pad = attn.h_qkv.bias.view(3, 2, 16)[1:]
    logits = torch.stack([(q * k).sum(-1)] + [(q * k_pad).sum(-1)] * 3, -1)
    weights = torch.softmax(logits * attn.scale, -1)  # (heads, 4)
    expected = weights[:, :1] * v + weights[:, 1:].sum(-1, True) * v_pad
    torch.testing.assert_close(out, expected.reshape(32), rtol=0, atol=1e-12)
    assert not torch.allclose(out, v.reshape(32))


def test_output_order_is_hifi_then_lofi():
    attn = randomise(HiLoAttention(64, 4, window_size=2, alpha=0.75))
    assert (attn.h_dim, attn.l_dim) == (16, 48)
    with torch.no_grad():
        attn.l_proj.weight.zero_()
        attn.l_proj.bias.zero_()
    out = attn(torch.randn(1, 16, 64), (4, 4))
    assert torch.count_nonzero(out[..., 16:]) == 0
    assert torch.count_nonzero(out[..., :16]) == out[..., :16].numel()


def test_float32_close_to_float64_and_backward():
    attn = randomise(HiLoAttention(48, 4, window_size=2, alpha=0.5))
    x = torch.randn(2, 35, 48, requires_grad=True)
    out = attn(x, (5, 7))
    expected = hilo_reference(attn.double(), x.double(), 5, 7)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_flops_readme_demo():
    attn = HiLoAttention(384, 12, window_size=2, alpha=0.5)
    assert attn.flops(14, 14) == 83_467_776


def test_flops_and_params_benchmark_layer():
    attn = HiLoAttention(768, 12, window_size=2, alpha=0.9, qkv_bias=True)
    assert attn.flops(14, 14) == 298_296_320
    assert sum(p.numel() for p in attn.parameters()) == 2_198_528
    # The formula counts exactly the matmul MACs of our forward (biases,
    # softmax and pooling excluded) on an unpadded map.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(
            SDPBackend.MATH), torch.no_grad():
        attn(torch.randn(1, 196, 768), (14, 14))
    assert counter.get_total_flops() == 2 * 298_296_320


def test_flops_rectangular_padded():
    attn = HiLoAttention(64, 4, window_size=2, alpha=0.5)
    # 5x7 pads to 6x8: Np = 48, 12 windows / pooled keys.
    h_dim = l_dim = 32
    expected = (48 * 64 * 3 * h_dim + 12 * 16 * h_dim * 2 +
                48 * h_dim * h_dim + 48 * 64 * l_dim + 12 * 64 * 2 * l_dim +
                48 * l_dim * 12 * 2 + 48 * l_dim * l_dim)
    assert attn.flops(5, 7) == expected


@pytest.mark.parametrize('alpha', [-0.1, 1.5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r'alpha .* must be in \[0, 1\]'):
        HiLoAttention(64, 4, alpha=alpha)


def test_bad_arguments():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        HiLoAttention(30, 4)
    with pytest.raises(ValueError, match='window_size must be a positive'):
        HiLoAttention(64, 4, window_size=0)
    attn = HiLoAttention(64, 4)
    with pytest.raises(ValueError, match='pass hw=\\(H, W\\)'):
        attn(torch.randn(1, 10, 64), (3, 4))


def test_registered():
    attn = MODELS.build(
        dict(type='HiLoAttention', embed_dims=64, num_heads=4, alpha=0.5))
    assert isinstance(attn, HiLoAttention)


@pytest.mark.parametrize('hw,fused', [((14, 14), False), ((28, 28), True)])
def test_lofi_takes_the_explicit_softmax_for_few_keys_on_cpu(hw, fused):
    """49 pooled keys (a 14x14 stage): explicit softmax, faster on CPU than
    SDPA's fused kernel; 196 keys: the fused kernel. Same values."""
    attn = randomise(HiLoAttention(64, 4, window_size=2, alpha=1.0))
    x = torch.randn(1, hw[0] * hw[1], 64)
    with torch.profiler.profile() as prof:
        out = attn(x, hw)
    kernels = {e.name for e in prof.events() if 'scaled_dot' in e.name}
    assert bool(kernels) == fused
    expected = hilo_reference(attn.double(), x.double(), *hw)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)
