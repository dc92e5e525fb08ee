# Copyright (c) mmlinattn contributors. All rights reserved.
"""SOFT / SOFT-Norm backbone and SoftmaxFreeAttention."""
import math

import pytest
import torch
import torch.nn as nn

from mmlinattn.models.attention.soft_attention import (SoftmaxFreeAttention,
                                                       newton_schulz_inverse,
                                                       softmax_free_attention)
from mmlinattn.models.backbones.soft import SOFT
from mmlinattn.testing import count_params

SMALL_ARCH = dict(
    embed_dims=[16, 32, 64, 64], num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1])
# Classification parameters (1000-class head included) from soft.md §3.1.
PARAMS_M = dict(
    tiny=13.07, small=24.11, medium=45.81, large=64.70, huge=87.11)
HEAD_PARAMS = 512 * 1000 + 1000


def small_soft(**kwargs) -> SOFT:
    torch.manual_seed(0)
    kwargs.setdefault('arch', SMALL_ARCH)
    return SOFT(**kwargs)


def meta_soft(arch, **kwargs) -> SOFT:
    """A full-size model on the meta device: parameter shapes without the
    cost of allocating and initialising it."""
    with torch.device('meta'):
        return SOFT(arch, **kwargs)


def cheap_full_size(arch, **kwargs) -> SOFT:
    """A full-size model with a cheap random init (for shape tests)."""
    model = meta_soft(arch, **kwargs).to_empty(device='cpu')
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02, generator=generator)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    return model.eval()


# ------------------------------------------------------------- structure
@pytest.mark.parametrize('arch', list(PARAMS_M))
def test_param_counts_every_arch(arch):
    model = meta_soft(arch)
    assert round((count_params(model) + HEAD_PARAMS) / 1e6, 2) == \
        PARAMS_M[arch]


@pytest.mark.parametrize('arch', list(PARAMS_M))
def test_shapes_every_arch(arch):
    model = cheap_full_size(arch, out_indices=(0, 1, 2, 3), newton_iter=2)
    dims = SOFT.arch_zoo[arch]['embed_dims']
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 61, 45))
    # strides 4/8/16/32 with ceil rounding (3x3 stride-2 pad-1 convs)
    expected = [(1, dims[i], math.ceil(61 / 2**(i + 2)),
                 math.ceil(45 / 2**(i + 2))) for i in range(4)]
    assert [tuple(o.shape) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_tiny_official_grids():
    """230x250 -> 58x63, 29x32, 15x16, 8x8 with m = 49, 56, 56 (soft.md)."""
    model = cheap_full_size('tiny', out_indices=(0, 1, 2, 3), newton_iter=2)
    landmarks = []
    hooks = [
        stage.blocks[0].attn.landmark_norm.register_forward_hook(
            lambda m, i, o: landmarks.append(o.shape[2]))
        for stage in model.stages[:3]
    ]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 230, 250))
    for hook in hooks:
        hook.remove()
    assert [tuple(o.shape[2:]) for o in outs] == [(58, 63), (29, 32),
                                                  (15, 16), (8, 8)]
    assert landmarks == [49, 56, 56]


def test_tiny_real_forward():
    torch.manual_seed(0)
    model = SOFT('tiny', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 61, 45))
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 12), (8, 6), (4, 3),
                                                  (2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_repo_small_depths_via_custom_arch():
    arch = dict(SOFT.arch_zoo['small'], depths=[1, 3, 20, 4])
    with torch.device('meta'):
        model = SOFT(arch)
    assert round((count_params(model) + HEAD_PARAMS) / 1e6, 2) == 38.86


@pytest.mark.parametrize('size', [(64, 64), (65, 97), (33, 29), (128, 96)])
def test_small_arch_odd_sizes(size):
    model = small_soft(out_indices=(0, 1, 2, 3)).eval()
    outs = model(torch.randn(2, 3, *size))
    assert [o.shape[1] for o in outs] == SMALL_ARCH['embed_dims']
    for i, out in enumerate(outs):
        assert out.shape[2:] == (math.ceil(size[0] / 2**(i + 2)),
                                 math.ceil(size[1] / 2**(i + 2)))


def test_cls_token_output_and_featmap_policy():
    x = torch.randn(2, 3, 64, 64)
    cls_model = small_soft(out_type='cls_token').eval()
    (cls_feat, ) = cls_model(x)
    assert cls_feat.shape == (2, 64)
    # keep policy: the feature map of the classifier's own stage 4
    keep = small_soft(out_indices=(3, )).eval()
    keep.load_state_dict(cls_model.state_dict())
    feat = keep(x)[0]
    assert feat.shape == (2, 64, 2, 2)
    # drop policy: no cls token parameters, different stage-4 features
    drop = small_soft(with_cls_token=False).eval()
    assert not hasattr(drop.stages[3], 'cls_token')
    missing, unexpected = drop.load_state_dict(
        cls_model.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == [
        'stages.3.cls_pos_embed', 'stages.3.cls_token'
    ]
    assert not torch.allclose(drop(x)[0], feat)
    # stages 0-2 do not depend on the policy
    both = small_soft(out_indices=(0, 1, 2), with_cls_token=False).eval()
    both.load_state_dict(cls_model.state_dict(), strict=False)
    keep_all = small_soft(out_indices=(0, 1, 2)).eval()
    keep_all.load_state_dict(cls_model.state_dict(), strict=False)
    for a, b in zip(both(x), keep_all(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_norm3_only_when_stage3_is_output():
    assert hasattr(small_soft(out_indices=(3, )), 'norm3')
    assert not hasattr(small_soft(out_indices=(0, 1, 2)), 'norm3')


def test_pos_embed_interpolation():
    model = small_soft(pretrain_img_size=64, out_indices=(0, )).eval()
    x = torch.randn(1, 3, 96, 80)
    out = model(x)[0]
    assert out.shape == (1, 16, 24, 20)


# ----------------------------------------------------------- bad input
def test_bad_arch_messages():
    with pytest.raises(ValueError, match=r'Arch foo is not in default archs '
                       r"\[.*'huge'.*'tiny'.*\]"):
        SOFT('foo')
    with pytest.raises(ValueError, match=r"missing \['depths'\]"):
        SOFT(dict(embed_dims=[8] * 4, num_heads=[1] * 4))
    with pytest.raises(ValueError, match=r"Unknown SOFT arch keys \['mlp'\]"):
        SOFT(dict(SMALL_ARCH, mlp=4))
    with pytest.raises(ValueError, match='needs 4 entries'):
        SOFT(dict(SMALL_ARCH, depths=[1, 1, 1]))


def test_bad_out_indices_and_options():
    with pytest.raises(ValueError, match='out of range'):
        small_soft(out_indices=(4, ))
    with pytest.raises(ValueError, match='cls_token'):
        small_soft(out_type='cls_token', out_indices=(2, 3))
    with pytest.raises(ValueError, match='cls_token'):
        small_soft(out_type='cls_token', with_cls_token=False)
    with pytest.raises(ValueError, match='newton_variant'):
        small_soft(newton_variant='c')
    with pytest.raises(ValueError, match='kernel_method'):
        small_soft(kernel_method='cuda')
    with pytest.raises(TypeError):
        small_soft(pretrained=123)


def test_too_small_input_states_minimum():
    model = small_soft().eval()
    assert model.min_input_size == 29  # landmark conv of stage 1: 4*7+1
    model(torch.randn(1, 3, 29, 29))
    with pytest.raises(ValueError, match='at least 29x29 pixels'):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match='in_channels = 3'):
        model(torch.randn(1, 1, 64, 64))
    attn = SoftmaxFreeAttention(32, 1, sr_ratio=4)
    with pytest.raises(ValueError, match='at least 4x4'):
        attn(torch.randn(1, 9, 32), (3, 3))


# ----------------------------------------------------- openmmlab options
def test_official_init():
    model = small_soft(arch=dict(SMALL_ARCH, embed_dims=[64, 64, 64, 64]))
    q = model.stages[0].blocks[0].attn.q
    assert abs(q.weight.std().item() - 0.02) < 0.004
    assert q.bias.abs().sum() == 0
    norm = small_soft(
        arch=dict(SMALL_ARCH, embed_dims=[64, 64, 64, 64]), sym_norm=True)
    # SOFT-Norm keeps PyTorch's default Linear init in stages 1-3
    q = norm.stages[0].blocks[0].attn.q
    assert abs(q.weight.std().item() - 1 / math.sqrt(3 * 64)) < 0.01
    kv = norm.stages[3].blocks[0].attn.kv
    assert abs(kv.weight.std().item() - 0.02) < 0.004
    # init_weights() without init_cfg keeps the construction-time init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_drop_rates_follow_official_rule():
    model = SOFT('tiny', drop_path_rate=0.1)
    rates = [b.dropout.p for s in model.stages[:3] for b in s.blocks]
    assert rates == pytest.approx([0, 0.1 / 7, 0.2 / 7, 0.3 / 7, 0.4 / 7,
                                   0.5 / 7])
    stage4 = [b.drop_path.p for b in model.stages[3].blocks]
    assert stage4 == pytest.approx([0.6 / 7, 0.1])


# --------------------------------------------------------- Newton-Schulz
def spd_batch(batch=3, heads=2, m=12, seed=0) -> torch.Tensor:
    """Well-conditioned landmark kernels exp(-|l_i - l_j|^2 / 2)."""
    g = torch.Generator().manual_seed(seed)
    landmarks = torch.randn(
        batch, heads, m, 8, generator=g, dtype=torch.float64)
    dist = torch.cdist(landmarks, landmarks)**2
    return torch.exp(-dist / 2)


def test_newton_variant_a_is_regularized_inverse():
    mat = spd_batch()
    eye = torch.eye(mat.shape[-1], dtype=mat.dtype)
    inv = newton_schulz_inverse(mat, 20, 'a')
    torch.testing.assert_close(inv, torch.linalg.inv(mat + 0.01 * eye))
    # analytic backward == autograd through torch.linalg.inv(A + 0.01 I)
    mat_a = mat.clone().requires_grad_()
    mat_b = mat.clone().requires_grad_()
    weight = torch.randn_like(mat)
    (newton_schulz_inverse(mat_a, 30, 'a') * weight).sum().backward()
    (torch.linalg.inv(mat_b + 0.01 * eye) * weight).sum().backward()
    torch.testing.assert_close(mat_a.grad, mat_b.grad)


@pytest.mark.parametrize('variant', ['b', 'b_per_matrix'])
def test_newton_variant_b_is_inverse(variant):
    mat = spd_batch()
    inv = newton_schulz_inverse(mat, 30, variant)
    torch.testing.assert_close(inv, torch.linalg.inv(mat))
    mat = mat.clone().requires_grad_()
    newton_schulz_inverse(mat, 30, variant).sum().backward()
    assert torch.isfinite(mat.grad).all()


def test_newton_batch_dependence():
    mat = spd_batch()
    mat[1] = mat[1] * 3 + 2  # a batch member with much larger row sums
    for variant, independent in (('a', True), ('b', False),
                                 ('b_per_matrix', True)):
        batched = newton_schulz_inverse(mat, 5, variant)
        alone = newton_schulz_inverse(mat[:1], 5, variant)
        same = torch.allclose(batched[:1], alone, rtol=1e-10, atol=1e-12)
        assert same == independent, variant


def test_newton_runs_in_fp32_under_autocast(monkeypatch):
    from mmlinattn.models.attention import soft_attention
    seen = []
    original = soft_attention.newton_schulz_inverse

    def recording(mat, *args):
        seen.append((mat.dtype, torch.is_autocast_enabled('cpu')))
        return original(mat, *args)

    monkeypatch.setattr(soft_attention, 'newton_schulz_inverse', recording)
    attn = SoftmaxFreeAttention(32, 1, sr_ratio=2, kernel_impl='reference')
    x = torch.randn(1, 64, 32)
    ref = attn(x, (8, 8))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x, (8, 8))
    assert out.dtype == torch.bfloat16  # the projections ran in bf16
    assert seen == [(torch.float32, False)] * 2
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


# ------------------------------------------------------------ attention
@pytest.mark.parametrize('sym_norm', [False, True])
def test_fused_equals_reference(sym_norm):
    torch.manual_seed(0)
    ref = SoftmaxFreeAttention(
        64, 2, sr_ratio=2, conv_size=3, sym_norm=sym_norm,
        kernel_method='exact', kernel_impl='reference')
    fused = SoftmaxFreeAttention(
        64, 2, sr_ratio=2, conv_size=3, sym_norm=sym_norm,
        kernel_impl='fused')
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 7 * 9, 64, requires_grad=True)
    out_ref, out_fused = ref(x, (7, 9)), fused(x, (7, 9))
    torch.testing.assert_close(out_fused, out_ref, rtol=1e-4, atol=1e-5)
    g_ref, = torch.autograd.grad(out_ref.square().sum(), x)
    g_fused, = torch.autograd.grad(out_fused.square().sum(), x)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-3, atol=1e-4)


def test_kernel_methods_agree():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 50, 32, generator=g)
    landmarks = torch.randn(1, 2, 9, 32, generator=g)
    v = torch.randn(1, 2, 50, 32, generator=g)
    outs = [
        softmax_free_attention(q, landmarks, v, kernel_method=method)
        for method in ('expand', 'exact')
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-4)


def test_max_landmarks_bounds_m_and_keeps_checkpoints():
    attn = SoftmaxFreeAttention(32, 1, sr_ratio=8, max_landmarks=256)
    assert attn.landmark_grid((200, 334)) == (12, 20)  # 1025 -> 240
    assert attn.landmark_grid((56, 56)) == (7, 7)  # untouched below cap
    torch.manual_seed(0)
    plain = small_soft()
    capped = small_soft(max_landmarks=4)
    assert plain.state_dict().keys() == capped.state_dict().keys()
    capped.load_state_dict(plain.state_dict())
    plain.eval(), capped.eval()
    small = torch.randn(1, 3, 64, 64)  # 2x2 landmarks: cap not reached
    torch.testing.assert_close(capped(small)[0], plain(small)[0])
    large = torch.randn(1, 3, 160, 96)  # 5x3 landmarks in stage 1
    assert not torch.allclose(capped(large)[0], plain(large)[0])
    seen = []
    hook = capped.stages[0].blocks[0].attn.landmark_norm.register_forward_hook(
        lambda m, i, o: seen.append(o.shape[2]))
    capped(large)
    hook.remove()
    assert seen == [2]  # (5, 3) grid scaled by sqrt(4 / 15) -> (2, 1)


@pytest.mark.parametrize('sym_norm', [False, True])
def test_newton_op_is_counted_by_mmengine_flop_analysis(sym_norm):
    """Variant a (a traced autograd.Function) and SOFT-Norm's variant b
    (bmm + baddbmm steps) both count two m^3 matmuls per step."""
    from mmengine.analysis import FlopAnalyzer

    def flops(newton_iter):
        attn = SoftmaxFreeAttention(
            64, 2, sr_ratio=2, newton_iter=newton_iter, sym_norm=sym_norm,
            kernel_impl='reference')
        analyzer = FlopAnalyzer(attn, (torch.randn(3, 14 * 14, 64), (14, 14)))
        analyzer.unsupported_ops_warnings(False)
        total = analyzer.total()
        unsupported = analyzer.unsupported_ops()
        assert not any('Newton' in op or 'bmm' in op for op in unsupported)
        return total

    m = 7 * 7  # landmarks of a 14 x 14 grid with sr_ratio 2
    assert flops(20) - flops(10) == 10 * 2 * (3 * 2) * m**3


def test_local_conv_is_per_head_depthwise():
    attn = SoftmaxFreeAttention(64, 2, sr_ratio=2, conv_size=5)
    assert attn.local_conv.weight.shape == (2, 1, 5, 5)
    assert attn.landmark_conv.weight.shape == (32, 32, 2, 2)
    assert not hasattr(attn, 'k')
    assert isinstance(attn.landmark_norm, nn.LayerNorm)


def test_auto_kernel_impl_fuses_only_for_many_landmarks(monkeypatch):
    """'auto' takes the memory-linear path when the extension serves the
    device and m > 2 * head_dims; few landmarks keep the faster
    materialised path."""
    from mmlinattn.models.attention import soft_attention
    attn = soft_attention.SoftmaxFreeAttention(64, 2, sr_ratio=2)
    query = torch.zeros(1, 2, 16, 32)
    monkeypatch.setattr(soft_attention, 'ops_backend',
                        lambda t: 'extension')
    assert attn.use_fused(query, 65) and not attn.use_fused(query, 64)
    monkeypatch.setattr(soft_attention, 'ops_backend',
                        lambda t: 'reference')
    assert not attn.use_fused(query, 1000)


@pytest.mark.parametrize('shape', [(3, 2, 9, 9), (5, 16, 16)])
def test_fused_newton_steps_equal_official_formulation(shape):
    """bmm + baddbmm steps give the official ``2V - V A V`` values, and the
    same gradients through the iterations (variant b is differentiated)."""
    from mmlinattn.models.attention.soft_attention import \
        newton_steps_reference
    from mmlinattn.ops import newton_schulz_steps_reference
    x = torch.randn(*shape[:-1], 4, dtype=torch.float64)
    mat = torch.exp(-0.5 * torch.cdist(x, x)**2)
    mat = mat.requires_grad_()
    inv0 = mat / mat.sum(-1).amax(-1)[..., None, None]**2
    fused = newton_schulz_steps_reference(inv0, mat, 12)
    ref = newton_steps_reference(inv0, mat, 12)
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(fused)
    g_fused, = torch.autograd.grad(fused, mat, grad, retain_graph=True)
    g_ref, = torch.autograd.grad(ref, mat, grad)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-8, atol=1e-10)
