# Copyright (c) mmlinattn contributors. All rights reserved.
"""XNormAttention (UFO-ViT / X-ViT): formula, third-party parity, options,
linear cost and bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer

from mmlinattn.models.attention.xnorm_attention import (
    XNormAttention, xnorm_attention_from_third_party,
    xnorm_attention_to_third_party)
from mmlinattn.registry import MODELS
from mmlinattn.testing import count_params


def direct_float64(module: XNormAttention, query: torch.Tensor,
                   key: torch.Tensor) -> np.ndarray:
    """The paper's formula evaluated token by token in numpy float64:
    out_n = proj(concat_h XNorm(q_n) @ XNorm(sum_m k_m v_m^T))."""
    h, dk, dv = module.num_heads, module.key_dims, module.value_dims
    W = module.qkv.weight.detach().double().numpy()
    b = module.qkv.bias.detach().double().numpy()
    Wo = module.proj.weight.detach().double().numpy()
    bo = module.proj.bias.detach().double().numpy()
    if module.gamma_mode == 'shared':
        g_q = g_kv = module.gamma.detach().double().numpy().reshape(h)
    else:
        g_q = module.gamma_q.detach().double().numpy().reshape(h)
        g_kv = module.gamma_kv.detach().double().numpy().reshape(h)
    eps = module.eps
    xq, xk = query.double().numpy(), key.double().numpy()
    out = np.zeros((xq.shape[0], xq.shape[1], Wo.shape[0]))
    for bi in range(xq.shape[0]):
        q = xq[bi] @ W[:h * dk].T + b[:h * dk]
        k = xk[bi] @ W[h * dk:2 * h * dk].T + b[h * dk:2 * h * dk]
        v = xk[bi] @ W[2 * h * dk:].T + b[2 * h * dk:]
        heads = []
        for hi in range(h):
            qh = q[:, hi * dk:(hi + 1) * dk]
            kv = sum(
                np.outer(k[m, hi * dk:(hi + 1) * dk], v[m,
                                                        hi * dv:(hi + 1) * dv])
                for m in range(k.shape[0]))
            axis = module.kv_norm_axis
            kv = g_kv[hi] * kv / np.maximum(
                np.linalg.norm(kv, axis=axis, keepdims=True), eps)
            qh = g_q[hi] * qh / np.maximum(
                np.linalg.norm(qh, axis=-1, keepdims=True), eps)
            heads.append(qh @ kv)
        out[bi] = np.concatenate(heads, axis=-1) @ Wo.T + bo
    return out


def third_party_formula(sd, queries, keys, values, h, d_k, d_v):
    """The External-Attention-pytorch ``UFOAttention.forward`` formula
    (commit 76b9aaf), written from its description: one gamma for both
    norms, ``x * gamma / ||x||`` over the last dim without eps, separate
    q/k/v projections."""
    b, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
    q = F.linear(queries, sd['fc_q.weight'], sd['fc_q.bias'])
    k = F.linear(keys, sd['fc_k.weight'], sd['fc_k.bias'])
    v = F.linear(values, sd['fc_v.weight'], sd['fc_v.bias'])
    q = q.view(b, nq, h, d_k).permute(0, 2, 1, 3)
    k = k.view(b, nk, h, d_k).permute(0, 2, 3, 1)
    v = v.view(b, nk, h, d_v).permute(0, 2, 1, 3)
    gamma = sd['gamma']
    kv = torch.matmul(k, v)
    kv = kv * gamma / torch.norm(kv, 2, -1, True)
    q = q * gamma / torch.norm(q, 2, -1, True)
    out = torch.matmul(q, kv).permute(0, 2, 1, 3).contiguous()
    out = out.view(b, nq, h * d_v)
    return F.linear(out, sd['fc_o.weight'], sd['fc_o.bias'])


def randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (biases and gammas are 0 / 1 at init)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


@pytest.mark.parametrize('gamma_mode', ['shared', 'separate'])
@pytest.mark.parametrize('kv_norm_axis', [-1, -2])
def test_matches_direct_float64_formula(gamma_mode, kv_norm_axis):
    torch.manual_seed(0)
    m = randomise(
        XNormAttention(
            24, 3, gamma_mode=gamma_mode, kv_norm_axis=kv_norm_axis)).double()
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    y = torch.randn(2, 7, 24, dtype=torch.float64)
    np.testing.assert_allclose(
        m(x).detach().numpy(), direct_float64(m, x, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        m(x, key=y).detach().numpy(),
        direct_float64(m, x, y),
        rtol=1e-10,
        atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_compat_equals_third_party_bit_for_bit(dtype):
    torch.manual_seed(1)
    h, d_k, d_v = 4, 12, 20
    m = XNormAttention(32, h, compat=True, head_dims=(d_k, d_v)).to(dtype)
    with torch.no_grad():  # compat init has zero biases: make them matter
        m.qkv.bias.normal_()
        m.proj.bias.normal_()
    sd = xnorm_attention_to_third_party(m.state_dict(), d_k, d_v, h)
    assert set(sd) == {
        'fc_q.weight', 'fc_q.bias', 'fc_k.weight', 'fc_k.bias', 'fc_v.weight',
        'fc_v.bias', 'fc_o.weight', 'fc_o.bias', 'gamma'
    }
    x = torch.randn(2, 50, 32, dtype=dtype)
    y = torch.randn(2, 37, 32, dtype=dtype)  # cross attention, N_q != N_k
    z = torch.randn(2, 37, 32, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(m(x), third_party_formula(sd, x, x, x, h, d_k, d_v))
        assert torch.equal(
            m(x, key=y, value=z),
            third_party_formula(sd, x, y, z, h, d_k, d_v))
    # conversion round trip
    back = xnorm_attention_from_third_party(sd)
    assert set(back) == set(m.state_dict())
    for name, tensor in m.state_dict().items():
        assert torch.equal(back[name], tensor), name


def test_compat_preset_and_overrides():
    m = XNormAttention(64, 4, compat=True)
    assert (m.gamma_mode, m.kv_norm_axis, m.eps) == ('shared', -1, 0.)
    # init of the third-party module: normal(0, 0.001) weights, zero bias
    assert m.qkv.weight.std().item() == pytest.approx(0.001, rel=0.1)
    assert m.qkv.bias.abs().max().item() == 0
    assert m.gamma.std().item() > 0.1  # randn, not ones
    # explicit arguments win over the preset
    m = XNormAttention(64, 4, compat=True, eps=1e-6, gamma_mode='separate')
    assert (m.gamma_mode, m.eps) == ('separate', 1e-6)
    default = XNormAttention(64, 4)
    assert (default.gamma_mode, default.kv_norm_axis,
            default.eps) == ('separate', -1, 1e-6)
    assert torch.equal(default.gamma_q.detach(), torch.ones(1, 4, 1, 1))
    assert default.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_parameter_counts_of_the_third_party_readme_example():
    # d_model=512, d_k=d_v=512, h=8 as in the third-party README
    assert count_params(XNormAttention(512, 8, compat=True,
                                       head_dims=512)) == 8_401_416
    # head width tied to the model width (d_k = d_v = 64)
    assert count_params(XNormAttention(512, 8, compat=True)) == 1_050_632


def test_shared_gamma_scales_output_by_gamma_squared():
    torch.manual_seed(2)
    m = randomise(XNormAttention(16, 2, gamma_mode='shared')).double()
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    with torch.no_grad():
        core = m.proj(torch.zeros(1, 1, 16, dtype=torch.float64))
        base = m(x) - core  # remove the projection bias: linear part only
        m.gamma.mul_(3)
        assert torch.allclose(m(x) - core, 9 * base)
        m.gamma.neg_()  # sign cancels with one shared gamma
        assert torch.allclose(m(x) - core, 9 * base)


def test_separate_gamma_is_not_sign_invariant():
    torch.manual_seed(3)
    m = randomise(XNormAttention(16, 2, gamma_mode='separate')).double()
    x = torch.randn(1, 9, 16, dtype=torch.float64)
    with torch.no_grad():
        core = m.proj(torch.zeros(1, 1, 16, dtype=torch.float64))
        base = m(x) - core
        m.gamma_q.neg_()
        assert torch.allclose(m(x) - core, -base)
        assert not torch.allclose(m(x) - core, base)


@pytest.mark.parametrize('axis', [-1, -2])
def test_kv_norm_axis_normalises_the_chosen_axis(axis):
    """After XNorm every row (axis -1) or column (axis -2) of K^T V has
    norm |gamma_kv| of its head. With one-hot queries (unit norm) the core
    returns gamma_q * XNorm(K^T V) itself."""
    torch.manual_seed(4)
    h, d = 2, 8
    m = randomise(XNormAttention(16, h, kv_norm_axis=axis))
    q = torch.eye(d).expand(1, h, d, d)
    k, v = torch.randn(2, 1, h, 10, d).unbind(0)
    kv_hat = m._xnorm_core(q, k, v) / m.gamma_q.detach()
    norms = torch.linalg.vector_norm(kv_hat, dim=axis)
    expected = m.gamma_kv.detach().abs().reshape(1, h, 1).expand_as(norms)
    assert torch.allclose(norms, expected, atol=1e-5)
    other = torch.linalg.vector_norm(kv_hat, dim=-3 - axis)
    assert not torch.allclose(other, expected, atol=1e-3)
    # and it is K^T V up to that normalisation
    kv = k.transpose(-2, -1) @ v
    ratio = kv_hat / kv
    assert torch.allclose(
        ratio, ratio.mean(dim=axis, keepdim=True).expand_as(ratio), rtol=1e-4)


def test_zero_input_nan_guard():
    x = torch.zeros(2, 6, 32)
    compat = XNormAttention(32, 4, compat=True)  # zero biases: q = kv = 0
    assert torch.isnan(compat(x)).all()  # reproduces the unguarded form
    guarded = randomise(XNormAttention(32, 4))
    with torch.no_grad():
        guarded.qkv.bias.zero_()
    out = guarded(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, guarded.proj.bias.expand_as(out))
    # gradients are finite too
    x = x.requires_grad_()
    guarded(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_half_precision_stays_finite():
    """K^T V sums over all tokens and overflows fp16; the core runs in
    fp32 and the result is cast back."""
    torch.manual_seed(5)
    m = XNormAttention(32, 4)
    x = torch.randn(1, 4096, 32) * 100
    # the hazard is real: K^T V computed in fp16 overflows
    _, k, v = m.qkv(x).detach().half().reshape(4096, 3, 4, 8).unbind(1)
    assert torch.isinf(torch.einsum('nhi,nhj->hij', k, v)).any()
    ref = m(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_bf16 = m(x)
    assert out_bf16.dtype == torch.bfloat16
    assert torch.isfinite(out_bf16).all()
    assert torch.allclose(out_bf16.float(), ref, atol=0.05, rtol=0.05)
    half = XNormAttention(32, 4).half()
    half.load_state_dict(m.state_dict())
    out_fp16 = half(x.half())
    assert out_fp16.dtype == torch.float16
    assert torch.isfinite(out_fp16).all()
    assert torch.allclose(out_fp16.float(), ref, atol=0.05, rtol=0.05)


def test_linear_cost_in_tokens():
    m = XNormAttention(64, 4).eval()
    C, d = 64, 16

    def flops(n):
        analyzer = FlopAnalyzer(m, (torch.randn(1, n, C), ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total(), analyzer.by_operator()['matmul']

    (total_n, core_n), (total_4n, core_4n) = flops(256), flops(1024)
    assert total_4n == 4 * total_n
    # attention core: K^T V and Q (K^T V), N * C * d multiply-adds each
    assert core_n == 2 * 256 * C * d
    assert core_4n == 4 * core_n


def test_registered_and_buildable():
    m = MODELS.build(dict(type='XNormAttention', embed_dims=32, num_heads=4))
    assert isinstance(m, XNormAttention)
    assert m(torch.randn(1, 5, 32)).shape == (1, 5, 32)


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(
            ValueError,
            match=r"gamma_mode must be one of "
            r"\('shared', 'separate'\)"):
        XNormAttention(32, 4, gamma_mode='per_channel')
    with pytest.raises(
            ValueError, match=r'kv_norm_axis must be one of '
            r'\(-1, -2\)'):
        XNormAttention(32, 4, kv_norm_axis=0)
    with pytest.raises(ValueError, match=r"gamma_init must be one of"):
        XNormAttention(32, 4, gamma_init='zeros')
    with pytest.raises(ValueError, match='eps must be >= 0'):
        XNormAttention(32, 4, eps=-1.)
    with pytest.raises(
            ValueError, match='embed_dims 30 is not divisible by num_heads 4'):
        XNormAttention(30, 4)
    # an explicit head width lifts the divisibility requirement
    m = XNormAttention(30, 4, head_dims=8)
    assert m(torch.randn(1, 3, 30)).shape == (1, 3, 30)
