# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLattenSwin: architecture, softmax windows against a direct O(N^2)
reference, dense-prediction behaviour, OpenMMLab API, checkpoints."""
import importlib.util
import itertools
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.models import FLattenSwin
from mmlinattn.models.attention import FocusedLinearAttention, WindowAttention
from mmlinattn.models.backbones.flatten_swin import (
    SwinPatchMerging, convert_flatten_swin_official, flatten_swin_to_official)
from mmlinattn.models.utils import TransformerBlock, parse_attn_type
from mmlinattn.testing import count_params

TINY = dict(embed_dims=16, depths=[1, 1, 2, 2], num_heads=[1, 2, 2, 4])


def tiny(**kwargs) -> FLattenSwin:
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('pretrain_img_size', 64)
    kwargs.setdefault('window_size', 3)
    return FLattenSwin(**kwargs)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values everywhere (zero-initialised scale / positional
    encoding and identity norms would hide layout mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


# ------------------------------------------------------------------ arch
@pytest.mark.parametrize('arch,params_m', [('tiny', 29.19), ('small', 50.51),
                                           ('base', 88.97),
                                           ('base-384', 91.43)])
def test_param_counts_match_the_paper(arch, params_m):
    model = FLattenSwin(arch)
    head = model.embed_dims[-1] * 1000 + 1000  # the 1000-class head
    assert abs((count_params(model) + head) / 1e6 - params_m) < 0.01


def test_released_structure():
    model = FLattenSwin('tiny')
    stage1, stage3 = model.stages[0].blocks, model.stages[2].blocks
    assert all(isinstance(b.attn, FocusedLinearAttention) for b in stage1)
    # L stages: global, learnt for the 56 x 56 / 28 x 28 pretraining grids
    assert stage1[0].attn.positional_encoding.shape == (1, 3136, 96)
    assert model.stages[1].blocks[0].attn.positional_encoding.shape == (1, 784,
                                                                        192)
    assert stage1[0].attn.dwc.weight.shape == (32, 1, 5, 5)
    assert all(isinstance(b.attn, WindowAttention) for b in stage3)
    assert [b.attn.shift for b in stage3] == [False, True] * 3
    assert stage3[0].attn.relative_position_bias_table.shape == (169, 12)
    big = FLattenSwin('base-384')
    assert big.stages[0].blocks[0].attn.positional_encoding.shape[1] == 96**2
    assert big.stages[2].blocks[0].attn.window_size == 12


def test_arch_errors():
    with pytest.raises(ValueError, match='Arch huge is not in default archs'):
        FLattenSwin('huge')
    with pytest.raises(ValueError, match=r"missing \['num_heads'\]"):
        FLattenSwin(dict(embed_dims=16, depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match='focusing_factor'):
        tiny(focusing_factor=0)
    with pytest.raises(ValueError, match='odd'):
        tiny(kernel_size=4)


def test_parse_attn_type():
    assert parse_attn_type('LLSS', [1, 2, 2, 1]) == [['L'], ['L', 'L'],
                                                     ['S', 'S'], ['S']]
    assert parse_attn_type('LLMS3', [2, 2, 5, 2])[2] == ['L'] * 3 + ['S'] * 2
    for bad in ['LLS', 'LLXS', 'LLMS', 'LLSS3', 'LLMSx']:
        with pytest.raises(ValueError, match="e.g. 'LLSS'"):
            parse_attn_type(bad, [2, 2, 2, 2])
    model = tiny(attn_type='SSMS1')
    types = [type(b.attn) for b in model.stages[2].blocks]
    assert types == [FocusedLinearAttention, WindowAttention]


# ------------------------------------------------- softmax window blocks
def reference_window_attention(attn: WindowAttention, x: torch.Tensor, hw,
                               shift: int) -> torch.Tensor:
    """Direct per-query evaluation of (shifted) window attention on the
    unpadded map: a query attends to the real tokens in its window of the
    padded, rolled map that lie in its shift region, with the relative
    position bias of their in-window offset."""
    H, W = hw
    w = attn.window_size
    Hp, Wp = H + (-H) % w, W + (-W) % w
    h = attn.num_heads
    B, N, C = x.shape
    d = C // h
    q, k, v = attn.qkv(x).view(B, N, 3, h, d).unbind(2)
    table = attn.relative_position_bias_table

    def place(i, j):  # rolled coordinates, window, shift region
        r, c = (i - shift) % Hp, (j - shift) % Wp

        def region(p, size):
            if shift == 0:
                return 0
            return 0 if p < size - w else (1 if p < size - shift else 2)

        return r, c, (r // w, c // w), (region(r, Hp), region(c, Wp))

    out = torch.zeros(B, N, h, d, dtype=x.dtype)
    tokens = list(itertools.product(range(H), range(W)))
    for i, j in tokens:
        rq, cq, win, reg = place(i, j)
        keys, bias = [], []
        for a, b in tokens:
            rk, ck, win_k, reg_k = place(a, b)
            if win_k == win and reg_k == reg:
                keys.append(a * W + b)
                dy, dx = rq - rk + w - 1, cq - ck + w - 1
                bias.append(table[dy * (2 * w - 1) + dx])
        logits = torch.einsum('bhd,bkhd->bhk', q[:, i * W + j],
                              k[:, keys]) / math.sqrt(d)
        logits = logits + torch.stack(bias, dim=-1)
        out[:, i * W + j] = torch.einsum('bhk,bkhd->bhd', logits.softmax(-1),
                                         v[:, keys])
    return attn.proj(out.reshape(B, N, C))


@pytest.mark.parametrize('hw,shift', [((6, 6), False), ((6, 9), True),
                                      ((7, 5), True), ((5, 8), False),
                                      ((2, 2), True)])
def test_window_attention_matches_direct_evaluation(hw, shift):
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window_size=3, shift=shift)
    attn = randomise(attn).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    out = attn(x, hw)
    applied = 1 if shift and min(hw) > 3 else 0  # no shift on small maps
    ref = reference_window_attention(attn, x, hw, applied)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_linear_blocks_are_global_focused_linear_attention():
    """'L' blocks: phi(Q) phi(K + pos)^T V row-normalised per head over the
    whole (non-square) map, + head-shared DWC(V), then proj; no window."""
    torch.manual_seed(0)
    hw = (5, 7)
    attn = randomise(FocusedLinearAttention(8, 2, key_grid=hw)).double()
    x = torch.randn(2, 35, 8, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    scale = F.softplus(attn.scale)

    def phi(t):
        t = (F.relu(t) + 1e-6) / scale
        return t**3 / (t**3).norm(
            dim=-1, keepdim=True) * t.norm(
                dim=-1, keepdim=True)

    fq, fk = phi(q), phi(k + attn.positional_encoding)
    out = torch.empty_like(q)
    for c in (slice(0, 4), slice(4, 8)):
        weights = fq[..., c] @ fk[..., c].transpose(1, 2)
        out[..., c] = weights @ v[..., c] / (
            weights.sum(-1, keepdim=True) + 35e-6)
    dwc = F.conv2d(
        v.transpose(1, 2).reshape(4, 4, *hw),
        attn.dwc.weight,
        attn.dwc.bias,
        padding=2,
        groups=4).reshape(2, 8, 35).transpose(1, 2)
    torch.testing.assert_close(
        attn(x, hw), attn.proj(out + dwc), rtol=1e-9, atol=1e-9)


def test_patch_merging_uses_the_official_order():
    merge = SwinPatchMerging(2, 4)
    nn.init.eye_(merge.reduction.weight)  # keep the first 4 of 8 channels
    merge.norm = nn.Identity()
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(1, 6, 2)
    out, hw = merge(x, (2, 3))  # odd width: padded with zeros
    assert hw == (1, 2)
    grid = x.view(2, 3, 2)
    # x0 = (0, 0), x1 = (1, 0), x2 = (0, 1), x3 = (1, 1) of each 2x2 cell
    expected = torch.cat([grid[0, 0], grid[1, 0]])
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 1], torch.cat([grid[0, 2], grid[1, 2]]))


# ------------------------------------------------------- dense prediction
@pytest.mark.parametrize('size,expected', [
    ((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ((63, 63), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ((45, 70), [(12, 18), (6, 9), (3, 5), (2, 3)]),
    ((9, 13), [(3, 4), (2, 2), (1, 1), (1, 1)]),
])
def test_any_input_size(size, expected):
    model = tiny(out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [o.shape[2:] for o in outs] == [torch.Size(e) for e in expected]
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    assert all(torch.isfinite(o).all() and o.is_contiguous() for o in outs)


def test_softmax_blocks_match_direct_evaluation_on_a_padded_map():
    """Two consecutive blocks (plain, shifted) on a 7 x 8 map, which the
    3 x 3 windows pad to 9 x 9: residuals, MLP and masked padding."""
    torch.manual_seed(0)
    blocks = [
        randomise(
            TransformerBlock(
                8, 2, dict(type='WindowAttention', window_size=3, shift=s)),
            seed=i).double() for i, s in enumerate([False, True])
    ]
    x = torch.randn(1, 7 * 8, 8, dtype=torch.float64)
    out, ref = x, x
    for block in blocks:
        out = block(out, (7, 8))
        ref = ref + reference_window_attention(block.attn, block.norm1(ref),
                                               (7, 8), int(block.attn.shift))
        ref = ref + block.mlp(block.norm2(ref))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_positional_encoding_resized_only_when_the_grid_differs(monkeypatch):
    model = tiny(out_indices=(1, ))
    calls = []
    import mmlinattn.models.attention.focused_linear_attention as fla
    original = fla.resize_pos_embed

    def spy(pos, src, dst, **kwargs):
        calls.append((tuple(src), tuple(dst)))
        return original(pos, src, dst, **kwargs)

    monkeypatch.setattr(fla, 'resize_pos_embed', spy)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert calls == [((16, 16), (16, 16)), ((8, 8), (8, 8))]
        block = model.stages[0].blocks[0].attn
        assert block.key_positional_encoding(
            (16, 16)) is (block.positional_encoding)
        model(torch.randn(1, 3, 40, 72))
    assert calls[-2:] == [((16, 16), (10, 18)), ((8, 8), (5, 9))]


# ------------------------------------------------------- OpenMMLab API
def test_out_indices_and_norms():
    model = tiny(out_indices=(1, -1))
    assert model.out_indices == (1, 3)
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3')
    assert not hasattr(model, 'norm0')
    with pytest.raises(ValueError, match='out of range'):
        tiny(out_indices=(4, ))


def test_init_weights_without_init_cfg_keeps_the_official_init():
    torch.manual_seed(0)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    attn = model.stages[0].blocks[0].attn
    assert attn.scale.abs().sum() == 0
    assert attn.positional_encoding.abs().sum() == 0
    qkv = model.stages[2].blocks[0].attn.qkv
    assert qkv.bias.abs().sum() == 0 and 0.01 < qkv.weight.std() < 0.03


def test_loading_224_weights_into_a_384_model_resizes_grids():
    small = randomise(tiny(pretrain_img_size=32, window_size=2))
    large = tiny(pretrain_img_size=48, window_size=3)
    with pytest.warns(UserWarning, match='resized'):
        large.load_state_dict(small.state_dict(), strict=True)
    pos = large.stages[0].blocks[0].attn.positional_encoding
    assert pos.shape == (1, 12 * 12, 16)
    table = large.stages[2].blocks[0].attn.relative_position_bias_table
    assert table.shape == (25, 2)
    # bicubic resize of a table keeps its mean roughly
    src = small.stages[2].blocks[0].attn.relative_position_bias_table
    assert abs(table.mean() - src.mean()) < 0.5 * src.abs().mean()


# --------------------------------------------------------- mixed precision
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_forward_is_finite_with_large_activations(dtype):
    torch.manual_seed(0)
    model = randomise(tiny(out_indices=(0, 1, 2, 3))).eval()
    with torch.no_grad():  # q, k of magnitude ~100: t**3 ~ 1e6 > fp16 max
        for block in model.stages[0].blocks:
            block.attn.qkv.weight.mul_(100)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=dtype):
            outs = model(x)
    for o, r in zip(outs, ref):
        assert torch.isfinite(o).all()
        err = (o.float() - r).norm() / r.norm()
        assert err < 0.1


# ------------------------------------------------------------ checkpoints
def test_converter_round_trip_strict():
    model = randomise(tiny())
    ours = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    ours['head.fc.weight'] = torch.randn(10, 128)
    ours['head.fc.bias'] = torch.randn(10)
    official = flatten_swin_to_official(ours)
    assert 'norm.weight' in official and 'head.weight' in official
    assert 'layers.0.downsample.reduction.weight' in official
    assert 'layers.0.blocks.0.attn.positional_encoding' in official
    # the official file also holds index / mask buffers and may be wrapped
    official['layers.2.blocks.0.attn.relative_position_index'] = torch.zeros(
        9, 9, dtype=torch.long)
    official['layers.2.blocks.1.attn_mask'] = torch.zeros(4, 9, 9)
    official = {f'module.{k}': v for k, v in official.items()}
    back = convert_flatten_swin_official(official)
    assert set(back) == set(ours)
    for k, v in ours.items():
        assert back[k] is v
    fresh = tiny()
    fresh.load_state_dict(
        {
            k[len('backbone.'):]: v
            for k, v in back.items() if k.startswith('backbone.')
        },
        strict=True)
    with pytest.raises(KeyError, match='not FLatten-Swin official keys'):
        convert_flatten_swin_official({'blocks.0.attn.qkv.weight': 0})


def test_official_tiny_key_layout():
    """Keys and shapes the converter must produce from an official
    FLatten-Swin-T file (spec: 196 tensors incl. 11 buffers)."""
    model = FLattenSwin('tiny')
    ours = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    ours['head.fc.weight'] = torch.zeros(1000, 768)
    ours['head.fc.bias'] = torch.zeros(1000)
    official = flatten_swin_to_official(ours)
    assert len(official) == 196 - 8 - 3  # minus the index / mask buffers
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    assert shapes['layers.0.blocks.1.attn.positional_encoding'] == (1, 3136,
                                                                    96)
    assert shapes['layers.1.blocks.0.attn.scale'] == (1, 1, 192)
    assert shapes['layers.2.blocks.5.attn.relative_position_bias_table'] == (
        169, 12)
    assert shapes['layers.2.downsample.reduction.weight'] == (768, 1536)
    assert shapes['layers.2.downsample.norm.weight'] == (1536, )
    assert shapes['patch_embed.proj.weight'] == (96, 3, 4, 4)


@pytest.mark.parametrize('to', ['cls', 'det'])
def test_converter_cli_on_an_official_layout_file(tmp_path, to):
    """tools/model_converters/flatten2mmlinattn.py recognises the family
    and the arch, drops the buffers and writes a weights_only file."""
    path = osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
        'model_converters', 'flatten2mmlinattn.py')
    spec = importlib.util.spec_from_file_location('flatten2mmlinattn', path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    ours = {
        f'backbone.{k}': v
        for k, v in randomise(FLattenSwin('tiny')).state_dict().items()
    }
    ours['head.fc.weight'] = torch.randn(1000, 768)
    ours['head.fc.bias'] = torch.randn(1000)
    official = flatten_swin_to_official(ours)
    for j in range(6):  # the buffers of stage 3 in the official file
        official[f'layers.2.blocks.{j}.attn.relative_position_index'] = (
            torch.zeros(49, 49, dtype=torch.long))
    official['layers.2.blocks.1.attn_mask'] = torch.zeros(4, 49, 49)
    src, dst = tmp_path / 'flatten_swin_t.pth', tmp_path / 'out.pth'
    torch.save({'model': official, 'epoch': 299}, src)
    cli.main([str(src), str(dst), '--to', to])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['family'] == 'swin'
    assert saved['meta']['arch'] == 'tiny'
    expected = {k for k in ours if to == 'cls' or k.startswith('backbone.')}
    assert set(saved['state_dict']) == expected
    for k in expected:
        torch.testing.assert_close(saved['state_dict'][k], ours[k])
