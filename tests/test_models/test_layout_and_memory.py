# Copyright (c) mmlinattn contributors. All rights reserved.
"""The speed / memory pieces of the shared layers: channels-last token
views, the MLP that recomputes its tail in backward and runs on cache-sized
tiles on CPU, block branches that recompute the LayerNorm outputs, and
attention calls that reach SDPA's fused CPU kernel."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef

from mmlinattn.models.attention import CSWinAttention, WindowAttention
from mmlinattn.models.utils import (Mlp, TransformerBlock, ffn, nchw_as_tokens,
                                    tokens_as_nchw, tokens_to_nchw,
                                    untiled_mlp)
from mmlinattn.models.utils.misc import branch_of_recomputed_norm


def test_token_views_cost_no_copy_and_match_the_contiguous_map():
    x = torch.randn(2, 5 * 7, 6)
    view = tokens_as_nchw(x, (5, 7))
    assert view.data_ptr() == x.data_ptr()
    assert view.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(view, tokens_to_nchw(x, (5, 7)))
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    out = conv(view)
    tokens = nchw_as_tokens(out)
    assert tokens.data_ptr() == out.data_ptr()  # channels-last out: free
    expected = conv(tokens_to_nchw(x, (5, 7))).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match='do not form a 4x7 grid'):
        tokens_as_nchw(x, (4, 7))


def _mlp_step(mlp, x, hw, plain, autocast=False):
    x = x.detach().requires_grad_()
    for p in mlp.parameters():
        p.grad = None
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        if plain:  # the textbook expression, autograd keeps everything
            y = mlp.fc2(mlp.drop(mlp.activate(mlp.fc1(x), hw)))
        else:
            y = mlp(x, hw)
    (y.float().sin()).sum().backward()
    grads = {n: p.grad for n, p in mlp.named_parameters() if p.grad is not None}
    return y.detach().float(), x.grad, grads


@pytest.mark.parametrize('conv_ffn', [False, True])
@pytest.mark.parametrize('autocast', [False, True])
def test_recomputed_mlp_tail_gives_autograds_values_and_gradients(
        conv_ffn, autocast):
    torch.manual_seed(0)
    mlp = Mlp(12, 48, use_dwconv=conv_ffn)
    x, hw = torch.randn(2, 5 * 7, 12), (5, 7)
    y0, gx0, g0 = _mlp_step(mlp, x, hw, plain=True, autocast=autocast)
    y1, gx1, g1 = _mlp_step(mlp, x, hw, plain=False, autocast=autocast)
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    torch.testing.assert_close(gx1, gx0, rtol=1e-6, atol=1e-7)
    assert g1.keys() == g0.keys() and len(g0) == (6 if conv_ffn else 4)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-6, atol=1e-7)


def test_recomputed_mlp_tail_keeps_one_hidden_tensor_and_respects_freezing():
    torch.manual_seed(0)
    mlp = Mlp(8, 64, use_dwconv=True)
    x = torch.randn(2, 16, 8, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mlp(x, (4, 4)).sum()
    hidden = 2 * 16 * 64
    # fc1 keeps its input (C-wide); the tail keeps fc1's output only
    assert sum(n for n in saved if n == hidden) == hidden
    for p in mlp.fc2.parameters():
        p.requires_grad_(False)
    mlp(x, (4, 4)).sum().backward()
    assert mlp.fc2.weight.grad is None and mlp.fc1.weight.grad is not None


def test_mlp_with_dropout_inside_takes_the_plain_path_in_training():
    torch.manual_seed(0)
    mlp = Mlp(8, 32, drop=0.5).train()
    x = torch.randn(2, 16, 8, requires_grad=True)
    y = mlp(x)
    assert 'RecomputedTail' not in type(y.grad_fn).__name__
    assert (y == 0).any()  # dropout after fc2 is active
    with pytest.raises(ValueError, match='needs the token grid'):
        Mlp(8, 32, use_dwconv=True)(x)


@pytest.fixture
def small_tiles(monkeypatch):
    """Row tiles of 64 rows (hidden 48, fp64, one thread) so that small
    inputs take the cache-tiled and banded CPU paths."""
    monkeypatch.setattr(ffn, '_TILE_BYTES_PER_THREAD', 64 * 48 * 8)
    monkeypatch.setattr(ffn, '_MIN_ROWS_PER_THREAD', 64)
    monkeypatch.setattr(ffn, '_BAND_TRAINING_BYTES_PER_THREAD', 64 * 48 * 8)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)


@pytest.fixture
def bands(monkeypatch):
    """The band heights of every banded ConvFFN call, in order."""
    calls = []
    banded = ffn._conv_ffn_banded
    monkeypatch.setattr(
        ffn, '_conv_ffn_banded',
        lambda *args: calls.append(args[-1]) or banded(*args))
    return calls


def _assert_same_results(plain, tiled, num_grads):
    """Outputs, input gradient and parameter gradients of two
    :func:`_step_and_inference` results agree."""
    for a, b in zip(plain[:3], tiled[:3]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert tiled[3].keys() == plain[3].keys()
    assert len(plain[3]) == num_grads
    for name in plain[3]:
        torch.testing.assert_close(tiled[3][name], plain[3][name],
                                   rtol=1e-12, atol=1e-12)


def _tiled_and_plain(mlp, x, hw):
    results = []
    for untiled in (True, False):
        context = untiled_mlp() if untiled else nullcontext()
        with context:
            results.append(_step_and_inference(mlp, x, hw))
    return results


def _step_and_inference(mlp, x, hw):
    xx = x.clone().requires_grad_()
    for p in mlp.parameters():
        p.grad = None
    y = mlp(xx, hw)
    (y.sin()).sum().backward()
    with torch.no_grad():
        y_eval = mlp(x, hw)
    grads = {n: p.grad for n, p in mlp.named_parameters() if p.grad is not None}
    return y.detach(), y_eval, xx.grad, grads, type(y.grad_fn).__name__


@pytest.mark.parametrize('conv_ffn', [False, True])
@pytest.mark.parametrize('approximate', ['none', 'tanh'])
def test_cache_tiled_mlp_gives_the_untiled_values_and_gradients(
        conv_ffn, approximate, small_tiles):
    torch.manual_seed(0)
    mlp = Mlp(12, 48, act_layer=lambda: nn.GELU(approximate=approximate),
              use_dwconv=conv_ffn).double()
    x, hw = torch.randn(3, 10 * 11, 12, dtype=torch.double), (10, 11)
    assert ffn._tile_rows(x, 48) == 64  # 330 rows: 5 tiles, the last short
    plain, tiled = _tiled_and_plain(mlp, x, hw)
    assert plain[4] == '_RecomputedTailBackward'
    assert tiled[4] == ('_RecomputedTailBackward'
                        if conv_ffn else '_TiledMlpBackward')
    _assert_same_results(plain, tiled, 6 if conv_ffn else 4)


def test_cache_tiled_mlp_keeps_one_hidden_tensor_and_respects_freezing(
        small_tiles):
    torch.manual_seed(0)
    mlp = Mlp(12, 48).double()
    x = torch.randn(2, 160, 12, dtype=torch.double, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mlp(x)
    assert type(y.grad_fn).__name__ == '_TiledMlpBackward'
    assert sum(n for n in saved if n == 2 * 160 * 48) == 2 * 160 * 48
    for p in mlp.fc1.parameters():
        p.requires_grad_(False)
    mlp(x).sum().backward()
    assert mlp.fc1.weight.grad is None and mlp.fc1.bias.grad is None
    assert mlp.fc2.weight.grad is not None and x.grad is not None
    reference = x.grad.clone()
    x.grad = None
    with untiled_mlp():
        assert ffn._tile_rows(x, 48) == 0
        mlp(x).sum().backward()
    torch.testing.assert_close(x.grad, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('hw', [(21, 17), (16, 16)])
def test_banded_conv_ffn_inference_gives_the_whole_map_values(
        hw, small_tiles, bands):
    torch.manual_seed(0)
    mlp = Mlp(12, 48, use_dwconv=True).double().eval()
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.double)
    with torch.no_grad():
        y = mlp(x, hw)
        expected = mlp.fc2(mlp.activate(mlp.fc1(x), hw))
    # 21 rows: bands of 8, 8 and 5 rows; 16 rows: two bands of 8
    assert bands == [8]
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # a map too small for bands takes the whole-map path
    assert ffn._band_rows(64, (8, 8), training=False) == 0
    with pytest.raises(ValueError, match='do not form'):
        with torch.no_grad():
            mlp(x, (hw[0] + 1, hw[1]))


@pytest.mark.parametrize('hw', [(21, 17), (16, 16)])
@pytest.mark.parametrize('frozen', ['', 'dwconv', 'fc1', 'fc2'])
def test_banded_conv_ffn_training_keeps_its_input_only(hw, frozen,
                                                        small_tiles, bands):
    torch.manual_seed(0)
    mlp = Mlp(12, 48, use_dwconv=True).double()
    for name, p in mlp.named_parameters():
        p.requires_grad_(not frozen or not name.startswith(frozen))
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.double)
    plain, tiled = _tiled_and_plain(mlp, x, hw)
    assert bands == [8, 8]  # training forward, then inference
    assert tiled[4] == '_BandedConvFFNBackward'
    _assert_same_results(plain, tiled, 6 - 2 * bool(frozen))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        mlp(x.requires_grad_(), hw)
    assert len(saved) == 1 and saved[0] is x


def test_cache_tiling_keeps_module_hooks_and_skips_graphs_nobody_needs(
        small_tiles):
    torch.manual_seed(0)
    mlp = Mlp(12, 48).double()
    x = torch.randn(2, 160, 12, dtype=torch.double)
    with untiled_mlp():
        expected = mlp(x)
    # grad mode on, but nothing requires grad: the no-graph tiled path
    for p in mlp.parameters():
        p.requires_grad_(False)
    y = mlp(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # a hook on a layer: the modules are called, the hook sees fc1's output
    seen = []
    mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    torch.testing.assert_close(mlp(x), expected, rtol=1e-12, atol=1e-12)
    assert seen == [(2, 160, 48)]


def test_cache_tiling_applies_only_where_it_pays(monkeypatch):
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    x = torch.randn(8, 3136, 64)  # PVT stage 1 at 224, batch 8
    tile = ffn._tile_rows(x, 512)
    assert tile % 64 == 0 and 64 <= tile <= 8 * 3136 // ffn._MIN_TILES
    assert ffn._tile_rows(x[:1, :196], 512) == 0  # too few rows
    # 14x14 at batch 8 with a wide hidden layer: tiles would be too small
    assert ffn._tile_rows(torch.randn(8, 196, 384), 1536) == 0
    assert ffn._tile_rows(x.half(), 512) == 0
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ffn._tile_rows(x, 512) == 0
    # a ConvFFN at 28x28 (batch 8, 19 MiB hidden) trains in bands of 14
    # rows, but infers whole-map (the GEMMs of a band would be too small);
    # at batch 2 (4.6 MiB) it trains whole-map too
    conv_ffn, x28 = Mlp(192, 768, use_dwconv=True), torch.randn(8, 784, 192)
    assert conv_ffn.band_rows(x28, (28, 28), training=True) == 14
    assert conv_ffn.band_rows(x28, (28, 28), training=False) == 0
    assert conv_ffn.band_rows(x28[:2], (28, 28), training=True) == 0
    assert conv_ffn.band_rows(x28, (14, 56), training=True) == 0
    # only GELU MLPs tile; another activation takes the plain path
    mlp = Mlp(64, 512, act_layer=nn.ReLU).train()
    y = mlp(x.requires_grad_())
    assert type(y.grad_fn).__name__ == '_RecomputedTailBackward'


def _sdpa_kernels(fn) -> set:
    with torch.profiler.profile() as prof:
        fn()
    return {e.name for e in prof.events() if 'scaled_dot_product' in e.name}


@pytest.mark.parametrize('shift', [False, True])
def test_window_attention_reaches_the_fused_cpu_kernel(shift):
    torch.manual_seed(0)
    attn = WindowAttention(32, 2, window_size=4, shift=shift).eval()
    x = torch.randn(2, 10 * 9, 32)  # padded to 12 x 12 -> masked windows
    with torch.no_grad():
        kernels = _sdpa_kernels(lambda: attn(x, (10, 9)))
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in kernels
    assert 'aten::_scaled_dot_product_attention_math' not in kernels


def test_padded_cswin_stripes_reach_the_fused_cpu_kernel():
    torch.manual_seed(0)
    attn = CSWinAttention(32, 2, split_size=3).eval()
    x = torch.randn(2, 7 * 8, 32)  # 7 x 8 is padded to whole stripes of 3
    with torch.no_grad():
        kernels = _sdpa_kernels(lambda: attn(x, (7, 8)))
    assert 'aten::_scaled_dot_product_flash_attention_for_cpu' in kernels
    assert 'aten::_scaled_dot_product_attention_math' not in kernels
    # and the fused kernel with the 4-D mask gives the masked math result
    with torch.no_grad(), torch.nn.attention.sdpa_kernel(
            torch.nn.attention.SDPBackend.MATH):
        reference = attn(x, (7, 8))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, (7, 8)), reference, rtol=1e-5,
                                   atol=1e-6)


def test_recomputed_mlp_tail_on_a_device_without_autocast():
    # shape checks build models on 'meta', which has no autocast state
    mlp = Mlp(8, 32, use_dwconv=True).to('meta')
    x = torch.randn(2, 16, 8, device='meta', requires_grad=True)
    y = mlp(x, (4, 4))
    assert 'RecomputedTail' in type(y.grad_fn).__name__
    y.sum().backward()
    assert mlp.fc2.weight.grad.shape == (8, 32)
    assert mlp.dwconv.dwconv.weight.grad.shape == (32, 1, 3, 3)


def _block_step(block, x, hw, outputs):
    x = x.clone().requires_grad_()
    for p in block.parameters():
        p.grad = None
    outputs.clear()
    y = block(x, hw)
    kept = [not o.expired() for o in outputs]
    (y.sin()).sum().backward()
    grads = {n: p.grad for n, p in block.named_parameters()}
    return y.detach(), x.grad, grads, kept


@pytest.mark.parametrize('attn', ['hilo', 'window'])
def test_block_branches_do_not_keep_the_norm_outputs(attn, monkeypatch):
    torch.manual_seed(0)
    cfg = (dict(type='HiLoAttention', alpha=0.5, window_size=2)
           if attn == 'hilo' else dict(type='WindowAttention', window_size=4))
    block = TransformerBlock(16, 2, cfg, conv_ffn=attn == 'hilo',
                             host_facts=dict(window_size=4, shift=False)
                             if attn == 'window' else None).double()
    x, hw = torch.randn(2, 8 * 8, 16, dtype=torch.double), (8, 8)
    outputs = []
    layer_norm = F.layer_norm  # (a module hook would switch the saving off)

    def recorded_layer_norm(*args, **kwargs):
        y = layer_norm(*args, **kwargs)
        outputs.append(StorageWeakRef(y.untyped_storage()))
        return y

    monkeypatch.setattr(F, 'layer_norm', recorded_layer_norm)
    *ours, kept = _block_step(block, x, hw, outputs)
    assert kept == [False, False]
    # inside other saved-tensor hooks (checkpointing, offloading) the plain
    # expression runs: the branches keep the outputs, same results
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        *plain, kept = _block_step(block, x, hw, outputs)
    # (window attention partitions a copy of its input)
    assert kept == [attn == 'hilo', True]
    assert torch.equal(ours[0], plain[0]) and torch.equal(ours[1], plain[1])
    for name, grad in plain[2].items():
        assert torch.equal(ours[2][name], grad), name


def test_recomputed_norm_keeps_what_is_saved_after_an_in_place_change():
    torch.manual_seed(0)
    norm = nn.LayerNorm(6).double()
    x = torch.randn(3, 5, 6, dtype=torch.double, requires_grad=True)

    def branch(y):
        y.mul_(2)
        return y * y  # saves 2 * norm(x): kept, not recomputed

    grads = []
    for recompute in (False, True):
        context = (nullcontext() if recompute else
                   torch.autograd.graph.saved_tensors_hooks(
                       lambda t: t, lambda t: t))
        with context:
            y = branch_of_recomputed_norm(branch, norm, x)
        grads.append(torch.autograd.grad(y.sum(), x)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def test_recomputed_norm_gives_second_order_gradients():
    torch.manual_seed(0)
    norm = nn.LayerNorm(6).double()
    x = torch.randn(3, 5, 6, dtype=torch.double, requires_grad=True)
    results = []
    for hooks in (False, True):
        context = (torch.autograd.graph.saved_tensors_hooks(
            lambda t: t, lambda t: t) if hooks else nullcontext())
        with context:
            y = branch_of_recomputed_norm(lambda t: t.pow(3), norm, x)
        g, = torch.autograd.grad(y.sum(), x, create_graph=True)
        gg, = torch.autograd.grad(g.square().sum(), x)
        results.append((g.detach(), gg))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
