# Copyright (c) mmlinattn contributors. All rights reserved.
"""FocusedLinearAttention against a direct O(N^2) evaluation of the FLatten
formula, plus construction errors, grids, precision and registration."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS as ROOT_MODELS

from mmlinattn.models.attention import FocusedLinearAttention
from mmlinattn.registry import MODELS


def randomise(layer: FocusedLinearAttention, seed: int = 0) -> None:
    """Non-trivial values for the zero-initialised parameters too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def phi_paper(x, scale, p):
    """phi_p of the paper: ||t|| t**p / ||t**p||, t = (ReLU(x)+1e-6)/s."""
    t = (F.relu(x) + 1e-6) / F.softplus(scale)
    return t.norm(
        dim=-1, keepdim=True) * t**p / (t**p).norm(
            dim=-1, keepdim=True)


def interp_tokens(v, size):
    """1-D linear resampling (half-pixel centres) of (B, n, C) tokens."""
    n = v.shape[1]
    pos = ((torch.arange(size, dtype=v.dtype) + 0.5) * n / size - 0.5).clamp(
        0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).view(1, -1, 1)
    return v[:, lo] * (1 - w) + v[:, hi] * w


def reference(layer, x, hw, pos=None):
    """Direct quadratic evaluation: row-normalised phi(Q) phi(K)^T V per
    head plus a head-shared depthwise conv on V, then proj."""
    B, N, C = x.shape
    H, W = hw
    h = layer.num_heads
    d = C // h
    if layer.qkv_layout == 'qkv':
        q, k, v = layer.qkv(x).split(C, dim=-1)
        kv_grid = hw
    else:
        q = layer.q(x)
        src = x
        kv_grid = hw
        if layer.sr_ratio > 1:
            s = layer.sr_ratio
            src = layer.sr(x.transpose(1, 2).reshape(B, C, H, W))
            kv_grid = src.shape[-2:]
            src = layer.norm(src.flatten(2).transpose(1, 2))
        k, v = layer.kv(src).split(C, dim=-1)
    n = k.shape[1]
    if pos is None:
        pos = layer.positional_encoding
    phi_q = phi_paper(q, layer.scale, layer.focusing_factor)
    phi_k = phi_paper(k + pos, layer.scale, layer.focusing_factor)
    out = torch.empty_like(q)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        sim = phi_q[..., sl] @ phi_k[..., sl].transpose(1, 2)  # (B, N, n)
        # the official normaliser adds 1e-6 to q.mean(k): n * 1e-6 here
        out[..., sl] = (sim @ v[..., sl]) / (
            sim.sum(-1, keepdim=True) + n * 1e-6)
    v_full = v if n == N else interp_tokens(v, N)
    weight = layer.dwc.weight.repeat(h, 1, 1, 1)
    bias = layer.dwc.bias.repeat(h)
    conv = F.conv2d(
        v_full.transpose(1, 2).reshape(B, C, H, W),
        weight,
        bias,
        padding=layer.kernel_size // 2,
        groups=C)
    out = out + conv.flatten(2).transpose(1, 2)
    return layer.proj(out), tuple(kv_grid)


CASES = [
    # layout, C, heads, grid, sr, p, kernel
    ('qkv', 24, 3, (5, 7), 1, 3, 5),
    ('qkv', 16, 1, (6, 6), 1, 2.5, 3),
    ('qkv', 16, 2, (4, 9), 1, 32, 7),
    ('q_kv', 20, 2, (7, 5), 1, 3, 5),
    ('q_kv', 16, 2, (8, 6), 2, 3, 5),
    ('q_kv', 16, 4, (9, 11), 3, 4, 5),
]


@pytest.mark.parametrize('layout,C,heads,grid,sr,p,kernel', CASES)
def test_matches_quadratic_reference_fp64(layout, C, heads, grid, sr, p,
                                          kernel):
    H, W = grid
    key_grid = (H // sr, W // sr)
    layer = FocusedLinearAttention(
        C,
        heads,
        key_grid=key_grid,
        qkv_layout=layout,
        sr_ratio=sr,
        focusing_factor=p,
        kernel_size=kernel).double().eval()
    randomise(layer)
    x = torch.randn(2, H * W, C, dtype=torch.float64) * 2
    with torch.no_grad():
        ours = layer(x, grid)
        ref, kv_grid = reference(layer, x, grid)
    assert kv_grid == key_grid
    assert ours.shape == (2, H * W, C)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_positional_encoding_resize():
    layer = FocusedLinearAttention(16, 2, key_grid=(4, 4)).double().eval()
    randomise(layer)
    # same grid: the parameter itself, no interpolation
    assert layer.key_positional_encoding((4, 4)) is layer.positional_encoding
    x = torch.randn(1, 5 * 7, 16, dtype=torch.float64)
    grid = layer.positional_encoding.reshape(1, 4, 4, 16).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(5, 7), mode='bicubic')
    resized = resized.flatten(2).transpose(1, 2)
    with torch.no_grad():
        ours = layer(x, (5, 7))
        ref, _ = reference(layer, x, (5, 7), pos=resized)
        wrong, _ = reference(layer, x, (5, 7), pos=torch.zeros_like(resized))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ours, wrong)


def test_no_positional_encoding_and_attend():
    """key_grid=None: no positional encoding; ``attend`` is the core that
    ``forward`` wraps in the projections."""
    layer = FocusedLinearAttention(16, 2, key_grid=None).double()
    assert layer.positional_encoding is None
    names = {name for name, _ in layer.named_parameters()}
    assert names == {
        'scale', 'qkv.weight', 'qkv.bias', 'dwc.weight', 'dwc.bias',
        'proj.weight', 'proj.bias'
    }
    with torch.no_grad():
        layer.scale.normal_()
        layer.qkv.weight.copy_(torch.eye(16).repeat(3, 1))
        layer.qkv.bias.zero_()
        layer.proj.weight.copy_(torch.eye(16))
        layer.proj.bias.zero_()
        x = torch.randn(2, 12, 16, dtype=torch.float64)
        expected = layer(x, (3, 4))
        got = layer.attend(x, x, x, (3, 4))
    torch.testing.assert_close(got, expected)


def test_qkv_layout_follows_the_spatial_reduction():
    assert FocusedLinearAttention(16, 2).qkv_layout == 'qkv'
    assert FocusedLinearAttention(16, 2, sr_ratio=2).qkv_layout == 'q_kv'


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='focusing_factor must be'):
        FocusedLinearAttention(16, 2, focusing_factor=0)
    with pytest.raises(ValueError, match='focusing_factor must be'):
        FocusedLinearAttention(16, 2, focusing_factor=-3)
    with pytest.raises(ValueError, match='kernel_size must be a positive odd'):
        FocusedLinearAttention(16, 2, kernel_size=4)
    with pytest.raises(ValueError, match='divisible by num_heads'):
        FocusedLinearAttention(18, 4)
    with pytest.raises(ValueError, match="needs qkv_layout='q_kv'"):
        FocusedLinearAttention(16, 2, sr_ratio=2, qkv_layout='qkv')
    with pytest.raises(ValueError, match='key_grid'):
        FocusedLinearAttention(16, 2, key_grid=(0, 4))
    layer = FocusedLinearAttention(16, 2, key_grid=(4, 4))
    with pytest.raises(ValueError, match='hw=\\(H, W\\)'):
        layer(torch.randn(1, 15, 16), (4, 4))
    reducer = FocusedLinearAttention(
        16, 2, key_grid=(2, 2), qkv_layout='q_kv', sr_ratio=4)
    with pytest.raises(ValueError, match='smaller than sr_ratio'):
        reducer(torch.randn(1, 6, 16), (2, 3))


def naive_fp16_linear_attention(q, k, v):
    """Original (2023) formulation: un-normalised sums, no fp32 island."""
    z = 1 / (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    return (q @ (k.transpose(-2, -1) @ v)) * z


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_autocast_is_finite_where_naive_overflows(dtype):
    torch.manual_seed(0)
    layer = FocusedLinearAttention(32, 1, key_grid=(40, 40)).eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0, 0.5)
    x = torch.randn(1, 1600, 32) * 10
    with torch.no_grad():
        expected = layer(x, (40, 40))
        with torch.autocast('cpu', dtype=dtype):
            got = layer(x, (40, 40))
        layer.fp32_attention = False
        with torch.autocast('cpu', dtype=dtype):
            unprotected = layer(x, (40, 40))
        # the same focused features through the 2023 formula in half
        q, k, v, grid = layer.project(x, (40, 40))
        phi_q, phi_k = layer.focused_features(q, k, grid)
        naive = naive_fp16_linear_attention(phi_q.half(), phi_k.half(),
                                            v.half())
    assert not naive.isfinite().all()
    if dtype is torch.float16:
        # even the mean / n^-1/2 form overflows in the fp16 normaliser
        assert not unprotected.isfinite().all()
    assert got.dtype == dtype and got.isfinite().all()
    rel = (got.float() - expected).abs().max() / expected.abs().max()
    assert rel < 1e-2


@pytest.mark.parametrize('fp32_attention', [True, False])
def test_pure_half_model_is_finite(fp32_attention):
    torch.manual_seed(0)
    layer = FocusedLinearAttention(
        32,
        2,
        key_grid=(24, 24),
        focusing_factor=8,
        fp32_attention=fp32_attention).eval()
    x = torch.randn(1, 576, 32) * 10
    with torch.no_grad():
        expected = layer(x, (24, 24))
        got = layer.half()(x.half(), (24, 24))
    assert got.dtype == torch.float16 and got.isfinite().all()
    rel = (got.float() - expected).abs().max() / expected.abs().max()
    assert rel < 2e-2


def test_backward_reaches_every_parameter():
    layer = FocusedLinearAttention(
        16, 2, key_grid=(3, 3), qkv_layout='q_kv', sr_ratio=2)
    x = torch.randn(2, 36, 16, requires_grad=True)
    layer(x, (6, 6)).sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.isfinite().all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad.isfinite().all()


def test_parameter_layout_matches_official_keys():
    swin = FocusedLinearAttention(96, 3, key_grid=(56, 56))
    shapes = {k: tuple(v.shape) for k, v in swin.state_dict().items()}
    assert shapes == {
        'qkv.weight': (288, 96),
        'qkv.bias': (288, ),
        'scale': (1, 1, 96),
        'positional_encoding': (1, 3136, 96),
        'dwc.weight': (32, 1, 5, 5),
        'dwc.bias': (32, ),
        'proj.weight': (96, 96),
        'proj.bias': (96, ),
    }
    pvt = FocusedLinearAttention(
        64, 1, key_grid=(7, 7), qkv_layout='q_kv', sr_ratio=8)
    assert sorted(pvt.state_dict()) == sorted([
        'q.weight', 'q.bias', 'kv.weight', 'kv.bias', 'sr.weight', 'sr.bias',
        'norm.weight', 'norm.bias', 'scale', 'positional_encoding',
        'dwc.weight', 'dwc.bias', 'proj.weight', 'proj.bias'
    ])
    assert pvt.norm.eps == 1e-5
    assert (swin.scale == 0).all() and (swin.positional_encoding == 0).all()


@pytest.mark.parametrize('registry,name',
                         [(MODELS, 'FocusedLinearAttention'),
                          (ROOT_MODELS, 'FocusedLinearAttention'),
                          (ROOT_MODELS, 'mmlinattn.FocusedLinearAttention')])
def test_registered(registry, name):
    layer = registry.build(
        dict(type=name, embed_dims=16, num_heads=2, key_grid=(2, 2)))
    assert isinstance(layer, FocusedLinearAttention)


@pytest.mark.parametrize('p', [3, 2.5, 0.5, 8])
def test_focusing_function_gradients(p):
    """The hand-written backward equals autograd of the paper's formula
    (and passes gradcheck), for q-like (B, N, C) and CSwin-like inputs."""
    from mmlinattn.models.attention.focused_linear_attention import \
        focusing_function
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(1, 1, 6, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, s: focusing_function(x, s, p),
                                    (x, scale))
    upstream = torch.randn(2, 5, 6, dtype=torch.float64)
    ours = torch.autograd.grad(
        (focusing_function(x, scale, p) * upstream).sum(), (x, scale))
    paper = torch.autograd.grad(
        (phi_paper(x, torch.log(torch.expm1(scale)), p) * upstream).sum(),
        (x, scale))
    for a, b in zip(ours, paper):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _core_inputs(dtype, B=2, N=12, n=9, C=8):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, m, C, generator=g, dtype=dtype).requires_grad_()
               for m in (N, n, n))
    scale = (torch.rand(1, 1, C, generator=g, dtype=dtype) +
             0.5).requires_grad_()
    return q, k, v, scale


def _plain_core(q, k, v, scale, p, heads):
    from mmlinattn.ops import focused_linear_attention_reference
    return focused_linear_attention_reference(q, k, v, scale, p, heads)[0]


@pytest.mark.parametrize('p', [3., 2.5])
@pytest.mark.parametrize('kernels', ['extension', 'reference'])
def test_core_node_gradients_and_saved_memory(p, kernels):
    """The one-node attention core (used whenever gradients are on) has the
    forward of the plain composition (bit for bit from the reference ops;
    up to float rounding from the fused kernel), its gradients (gradcheck
    in fp64; autograd of the composition), and saves fewer bytes."""
    from mmlinattn.models.attention.focused_linear_attention import \
        _FocusedLinearCore
    from mmlinattn.ops import reference_ops
    q, k, v, scale = _core_inputs(torch.float64)

    def core(*args):
        return _FocusedLinearCore.apply(*args, p, 2)

    with reference_ops() if kernels == 'reference' else nullcontext():
        assert torch.autograd.gradcheck(core, (q, k, v, scale))
        ours, plain = core(q, k, v, scale), _plain_core(q, k, v, scale, p, 2)
        if kernels == 'reference':
            assert torch.equal(ours, plain)
        else:
            torch.testing.assert_close(ours, plain, rtol=1e-13, atol=1e-15)
        upstream = torch.randn(2, 12, 8, dtype=torch.float64)
        for a, b in zip(
                torch.autograd.grad(core(q, k, v, scale), (q, k, v, scale),
                                    upstream),
                torch.autograd.grad(
                    _plain_core(q, k, v, scale, p, 2), (q, k, v, scale),
                    upstream)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    def saved_bytes(fn):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = \
                t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(q, k, v, scale)
        return sum(storages.values())

    inputs = sum(t.untyped_storage().nbytes() for t in (q, k, v, scale))
    ours = saved_bytes(core) - inputs
    plain = saved_bytes(lambda *a: _plain_core(*a, p, 2)) - inputs
    assert ours < plain / 2, (ours, plain)


def test_layer_uses_the_core_node_only_with_gradients(monkeypatch):
    import mmlinattn.models.attention.focused_linear_attention as fla
    calls = []
    original = fla._FocusedLinearCore.apply
    monkeypatch.setattr(fla._FocusedLinearCore, 'apply',
                        lambda *a: calls.append(1) or original(*a))
    layer = FocusedLinearAttention(16, 2, key_grid=(3, 4))
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        plain = layer(x, (3, 4))
    assert not calls
    with_grad = layer(x, (3, 4))
    assert calls and torch.equal(with_grad, plain)
    with_grad.sum().backward()
    assert layer.scale.grad is not None and layer.qkv.weight.grad is not None


def test_core_node_is_skipped_under_autocast(monkeypatch):
    """``attend`` called with float32 tensors inside autocast computes its
    products in bf16, with autocast's casts; the core node (whose backward
    runs without autocast) is then not used, and backward works."""
    import mmlinattn.models.attention.focused_linear_attention as fla
    calls = []
    original = fla._FocusedLinearCore.apply
    monkeypatch.setattr(fla._FocusedLinearCore, 'apply',
                        lambda *a: calls.append(1) or original(*a))
    layer = FocusedLinearAttention(16, 2, key_grid=(3, 4))
    q, k, v = (torch.randn(1, 12, 16, requires_grad=True) for _ in range(3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer.attend(q, k, v, (3, 4))
    assert out.dtype == torch.bfloat16 and not calls
    out.float().sum().backward()
    assert all(t.grad is not None for t in (q, k, v))
    layer.attend(q, k, v, (3, 4))
    assert calls


def test_scale_follows_the_wider_dtype_of_the_features():
    layer = FocusedLinearAttention(16, 2, key_grid=(3, 4)).half()
    assert layer._positive_scale(torch.zeros(1, dtype=torch.float32)
                                 ).dtype == torch.float32
    assert layer._positive_scale(torch.zeros(1, dtype=torch.float16)
                                 ).dtype == torch.float16
