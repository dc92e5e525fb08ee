# Copyright (c) mmlinattn contributors. All rights reserved.
"""The Linear layers' CPU GEMMs on oneDNN (``mmlinattn.models.utils.gemm``)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mmlinattn.models.utils import Linear, Mlp, blas_gemm, ffn, gemm

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(),
    reason='this PyTorch build has no oneDNN: Linear is nn.Linear')


def _onednn_calls(fn) -> int:
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.name == 'mkldnn::_linear_pointwise' for e in prof.events())


def _pair(in_features=40, out_features=72, bias=True):
    torch.manual_seed(0)
    ours = Linear(in_features, out_features, bias=bias)
    plain = nn.Linear(in_features, out_features, bias=bias)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def test_linear_is_an_nn_linear_with_the_same_state_dict():
    ours, plain = _pair()
    assert isinstance(ours, nn.Linear)
    assert list(ours.state_dict()) == list(plain.state_dict())
    assert repr(ours) == repr(plain)


@needs_onednn
@pytest.mark.parametrize('shape', [(37, 40), (3, 29, 40)])
@pytest.mark.parametrize('bias', [True, False])
def test_linear_gives_f_linear_values_and_gradients(shape, bias):
    ours, plain = _pair(bias=bias)
    x = torch.randn(*shape)
    upstream = torch.randn(*shape[:-1], 72)
    results = []
    for layer in (ours, plain):
        xx = x.clone().requires_grad_()
        y = layer(xx)
        params = [xx] + list(layer.parameters())
        results.append((y, torch.autograd.grad(y, params, upstream)))
    (y, grads), (y_ref, grads_ref) = results
    assert type(y.grad_fn).__name__ == '_OneDNNLinearBackward'
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape and g.is_contiguous()
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-4)
    assert _onednn_calls(lambda: ours(x)) == 1
    with torch.no_grad():
        assert ours(x).grad_fn is None
        torch.testing.assert_close(ours(x), y_ref, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_functional_linear_has_the_modules_gradients():
    """gemm.linear (used by hand-written paths) differentiates like the
    module: before, an input that needed a gradient got none from it."""
    ours, _ = _pair()
    x = torch.randn(5, 40, requires_grad=True)
    upstream = torch.randn(5, 72)
    y = gemm.linear(x, ours.weight, ours.bias)
    assert type(y.grad_fn).__name__ == '_OneDNNLinearBackward'
    got = torch.autograd.grad(y, [x, ours.weight, ours.bias], upstream)
    want = torch.autograd.grad(F.linear(x, ours.weight, ours.bias),
                               [x, ours.weight, ours.bias], upstream)
    for g, g_ref in zip(got, want):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_linear_backward_computes_only_the_gradients_asked_for():
    ours, plain = _pair()
    ours.weight.requires_grad_(False)
    x = torch.randn(9, 40, requires_grad=True)
    y = ours(x)
    y.sum().backward()
    assert ours.weight.grad is None and ours.bias.grad is not None
    torch.testing.assert_close(
        x.grad, plain.weight.sum(0).expand(9, 40), rtol=1e-5, atol=1e-5)
    # parameters only: the weight is not kept for an input gradient
    # nobody wants, x is kept for the weight's
    ours.weight.requires_grad_(True)
    saved = []
    x = torch.randn(9, 40)
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.shape) or t, lambda t: t):
        ours(x).sum().backward()
    assert saved == [(9, 40)]
    torch.testing.assert_close(
        ours.weight.grad, x.sum(0).expand(72, 40), rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize('rows_out_in', [(300, 16, 96), (300, 96, 16),
                                         (300, 256, 512), (300, 512, 256)])
def test_weight_grad_in_both_orientations(rows_out_in):
    rows, out, inp = rows_out_in
    g, x = torch.randn(rows, out), torch.randn(rows, inp)
    w = gemm.weight_grad(g, x)
    assert w.shape == (out, inp) and w.is_contiguous()
    torch.testing.assert_close(w, g.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        gemm.matmul(g, torch.randn(out, 5)).shape, torch.Size([rows, 5]))


@needs_onednn
def test_other_dtypes_tracing_autocast_and_blas_gemm_see_f_linear():
    ours, _ = _pair()
    x = torch.randn(5, 40)
    assert _onednn_calls(lambda: ours(x)) == 1
    assert _onednn_calls(lambda: ours.double()(x.double())) == 0
    ours.float()
    with blas_gemm():
        assert _onednn_calls(lambda: ours(x)) == 0
        assert not gemm.onednn_applies(x)
    assert gemm.onednn_applies(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ours(x).dtype == torch.bfloat16
    traced = torch.jit.trace(ours, x)
    assert 'aten::linear' in str(traced.graph)
    assert 'mkldnn' not in str(traced.graph)
    torch.backends.mkldnn.enabled = False
    try:
        assert _onednn_calls(lambda: ours(x)) == 0
    finally:
        torch.backends.mkldnn.enabled = True
    # FLOP counters see the aten op they count
    with FlopCounterMode(display=False) as counter:
        ours(x)
    assert counter.get_total_flops() == 2 * 5 * 40 * 72
    # empty inputs and functorch transforms take F.linear
    assert ours(torch.randn(0, 40)).shape == (0, 72)
    per_sample = torch.func.vmap(ours)(torch.randn(3, 5, 40))
    assert per_sample.shape == (3, 5, 72)


def test_linear_keeps_module_hooks():
    ours, _ = _pair()
    seen = []
    ours.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    ours(torch.randn(4, 40))
    assert seen == [(4, 72)]


@needs_onednn
@pytest.mark.parametrize('conv_ffn', [False, True])
def test_fp32_cache_tiled_mlp_on_onednn_matches_the_blas_path(
        conv_ffn, monkeypatch):
    """The hand-written MLP paths run their GEMMs through the same helpers:
    same values and gradients as with PyTorch's BLAS, and oneDNN is used."""
    monkeypatch.setattr(ffn, '_TILE_BYTES_PER_THREAD', 64 * 48 * 4)
    monkeypatch.setattr(ffn, '_MIN_ROWS_PER_THREAD', 64)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    torch.manual_seed(0)
    mlp = Mlp(12, 48, use_dwconv=conv_ffn)
    x, hw = torch.randn(3, 10 * 11, 12), (10, 11)
    assert ffn._tile_rows(x, 48) == 64

    def run():
        xx = x.clone().requires_grad_()
        y = mlp(xx, hw)
        grads = torch.autograd.grad(y.sin().sum(),
                                    [xx] + list(mlp.parameters()))
        with torch.no_grad():
            return (y, mlp(x, hw), *grads)

    assert _onednn_calls(run) > 0
    ours = run()
    with blas_gemm():
        assert _onednn_calls(run) == 0
        blas = run()
    for a, b in zip(ours, blas):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_linear_second_order_gradients_equal_f_linear():
    """create_graph=True (gradient penalties): the backward is recorded,
    and double backward gives F.linear's values."""
    ours, plain = _pair()
    x = torch.randn(6, 40)
    results = []
    for layer in (ours, plain):
        xx = x.clone().requires_grad_()
        y = layer(xx).tanh()
        gx, = torch.autograd.grad(y.sum(), xx, create_graph=True)
        penalty = (gx**2).sum()
        results.append(torch.autograd.grad(penalty, [xx, layer.weight]))
    assert type(ours(x.requires_grad_()).grad_fn).__name__ == (
        '_OneDNNLinearBackward')
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_strided_bias_and_non_strided_layouts():
    """The oneDNN op reads the bias as dense: a strided or expanded bias is
    made contiguous first; sparse / mkldnn / nested inputs take F.linear."""
    x, w = torch.randn(64, 48), torch.randn(32, 48)
    for bias in (torch.randn(64)[::2], torch.randn(1).expand(32)):
        torch.testing.assert_close(
            gemm.linear(x, w, bias), F.linear(x, w, bias), rtol=1e-5,
            atol=1e-4)
    assert not gemm.onednn_applies(x.to_sparse())
    torch.testing.assert_close(gemm.linear(x.to_sparse(), w), x @ w.t(),
                               rtol=1e-5, atol=1e-4)
    assert not gemm.onednn_applies(x.to_mkldnn())
