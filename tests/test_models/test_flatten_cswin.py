# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLattenCSWin: architecture, linear and stripe attention against direct
O(N^2) evaluations, dense-prediction behaviour, OpenMMLab API,
checkpoints."""
import importlib.util
import itertools
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.models import FLattenCSWin
from mmlinattn.models.attention import CSWinAttention, FocusedLinearAttention
from mmlinattn.models.backbones.flatten_cswin import (
    convert_flatten_cswin_official, flatten_cswin_to_official)
from mmlinattn.models.utils import TransformerBlock
from mmlinattn.testing import count_params

TINY = dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4])


def tiny(**kwargs) -> FLattenCSWin:
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('pretrain_img_size', 64)
    kwargs.setdefault('split_size', [1, 2, 2, 2])
    return FLattenCSWin(**kwargs)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


# ------------------------------------------------------------------ arch
@pytest.mark.parametrize('arch,params_m', [('tiny', 21.20), ('small', 35.45),
                                           ('base', 74.87),
                                           ('base-384', 78.37)])
def test_param_counts_match_the_paper(arch, params_m):
    model = FLattenCSWin(arch)
    head = model.embed_dims[-1] * 1000 + 1000
    assert abs((count_params(model) + head) / 1e6 - params_m) < 0.01


def test_released_structure():
    model = FLattenCSWin('tiny')
    first = model.stages[0].blocks[0].attn
    assert isinstance(first, FocusedLinearAttention)
    assert first.positional_encoding.shape == (1, 56 * 56, 64)
    assert first.dwc.weight.shape == (32, 1, 5, 5)
    assert first.lepe.weight.shape == (64, 1, 3, 3)
    stripes = model.stages[2].blocks[0].attn
    assert isinstance(stripes, CSWinAttention)
    assert not stripes.global_window and len(stripes.lepe) == 2
    assert stripes.lepe[0].weight.shape == (128, 1, 3, 3)
    last = model.stages[3].blocks[0].attn
    assert last.global_window and last.lepe[0].weight.shape == (512, 1, 3, 3)
    base = FLattenCSWin('base-384')
    assert base.stages[0].blocks[0].attn.positional_encoding.shape[1] == 96**2
    assert base.stages[2].blocks[0].attn.split_size == 12
    assert base.stages[0].blocks[0].attn.dwc.weight.shape == (24, 1, 5, 5)


def test_arch_and_argument_errors():
    with pytest.raises(ValueError, match='Arch huge is not in default archs'):
        FLattenCSWin('huge')
    with pytest.raises(ValueError, match='Custom arch needs'):
        FLattenCSWin(dict(embed_dims=16, num_heads=[2, 2, 2, 2]))
    with pytest.raises(ValueError, match='split_size needs one entry per stage'):
        tiny(split_size=[1, 2, 7])
    with pytest.raises(ValueError, match="e.g. 'LLSS'"):
        tiny(attn_type='LLS')
    with pytest.raises(ValueError, match='focusing_factor'):
        tiny(focusing_factor=-1)
    with pytest.raises(ValueError, match='odd'):
        tiny(kernel_size=2)
    with pytest.raises(ValueError, match='odd'):
        CSWinAttention(12, 3, split_size=2)


# ------------------------------------------------ direct reference forms
def reference_linear(attn: FocusedLinearAttention, q, k, v, hw):
    """phi(Q) phi(K)^T V row-normalised per head, + DWC(V) + LePE(V)."""
    B, N, C = q.shape
    h, d = attn.num_heads, attn.head_dims
    p = attn.focusing_factor
    scale = F.softplus(attn.scale)

    def phi(x):
        t = (F.relu(x) + 1e-6) / scale
        return t**p / (t**p).norm(
            dim=-1, keepdim=True) * t.norm(
                dim=-1, keepdim=True)

    fq, fk = phi(q), phi(k + attn.positional_encoding)
    out = torch.empty_like(q)
    for head in range(h):
        c = slice(head * d, (head + 1) * d)
        weights = fq[..., c] @ fk[..., c].transpose(1, 2)  # (B, N, N)
        out[..., c] = (weights @ v[..., c]) / (
            weights.sum(-1, keepdim=True) + N * 1e-6)
    image = v.transpose(1, 2).reshape(B, C, *hw)
    dwc = F.conv2d(
        image.reshape(B * h, d, *hw),
        attn.dwc.weight,
        attn.dwc.bias,
        padding=attn.kernel_size // 2,
        groups=d).reshape(B, C, -1)
    lepe = attn.lepe(image).reshape(B, C, -1)
    return out + (dwc + lepe).transpose(1, 2)


def reference_stripes(attn: CSWinAttention, q, k, v, hw):
    """Per query: softmax over the real tokens of its stripe, + LePE as a
    3 x 3 depthwise conv that sees only the query's stripe."""
    H, W = hw
    B, N, C = q.shape
    s = attn.split_size
    if attn.global_window:
        branches = [(slice(0, C), lambda i, j, a, b: True)]
    else:
        half = C // 2
        branches = [(slice(0, half), lambda i, j, a, b: b // s == j // s),
                    (slice(half, C), lambda i, j, a, b: a // s == i // s)]
    heads = attn.num_heads // len(branches)
    out = torch.zeros_like(q)
    tokens = list(itertools.product(range(H), range(W)))
    for (chan, same_stripe), conv in zip(branches, attn.lepe):
        c = chan.stop - chan.start
        d = c // heads
        for i, j in tokens:
            keys = [a * W + b for a, b in tokens if same_stripe(i, j, a, b)]
            qi = q[:, i * W + j, chan].view(B, heads, d)
            kk = k[:, keys, chan].view(B, len(keys), heads, d)
            vv = v[:, keys, chan].view(B, len(keys), heads, d)
            weights = torch.einsum('bhd,bkhd->bhk', qi, kk) / math.sqrt(d)
            out[:, i * W + j, chan] = torch.einsum('bhk,bkhd->bhd',
                                                   weights.softmax(-1),
                                                   vv).reshape(B, c)
            lepe = conv.bias.clone().expand(B, c).clone()
            for di, dj in itertools.product((-1, 0, 1), (-1, 0, 1)):
                a, b = i + di, j + dj
                if 0 <= a < H and 0 <= b < W and same_stripe(i, j, a, b):
                    weight = conv.weight[:, 0, di + 1, dj + 1]
                    lepe = lepe + weight * v[:, a * W + b, chan]
            out[:, i * W + j, chan] += lepe
    return out


@pytest.mark.parametrize('hw', [(4, 4), (5, 7), (3, 2)])
def test_linear_attention_matches_direct_evaluation(hw):
    torch.manual_seed(0)
    attn = randomise(FocusedLinearAttention(8, 2, hw, lepe=True)).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    torch.testing.assert_close(
        attn(x, hw),
        attn.proj(reference_linear(attn, q, k, v, hw)),
        rtol=1e-9,
        atol=1e-9)


@pytest.mark.parametrize('hw,global_window', [((4, 4), False), ((5, 7), False),
                                              ((3, 2), False), ((5, 3), True)])
def test_stripe_attention_matches_direct_evaluation(hw, global_window):
    torch.manual_seed(0)
    attn = randomise(
        CSWinAttention(8, 4, split_size=2,
                       global_window=global_window)).double()
    x = torch.randn(2, hw[0] * hw[1], 8, dtype=torch.float64)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    torch.testing.assert_close(
        attn(x, hw),
        attn.proj(reference_stripes(attn, q, k, v, hw)),
        rtol=1e-10,
        atol=1e-10)


def test_block_layout():
    """One qkv projection split [q | k | v], attention, then proj."""
    torch.manual_seed(0)
    block = randomise(
        TransformerBlock(8, 4, dict(type='CSWinAttention',
                                    split_size=2))).double()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    q, k, v = block.attn.qkv(block.norm1(x)).split(8, dim=-1)
    y = x + block.attn.proj(reference_stripes(block.attn, q, k, v, (3, 4)))
    y = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x, (3, 4)), y, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------- dense prediction
@pytest.mark.parametrize('size,expected', [
    ((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ((63, 63), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ((45, 70), [(11, 17), (6, 9), (3, 5), (2, 3)]),
    ((9, 13), [(2, 3), (1, 2), (1, 1), (1, 1)]),
])
def test_any_input_size(size, expected):
    model = tiny(out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [o.shape[2:] for o in outs] == [torch.Size(e) for e in expected]
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    assert all(torch.isfinite(o).all() and o.is_contiguous() for o in outs)


def test_positional_encoding_resized_only_when_the_grid_differs():
    model = tiny()
    attn = model.stages[0].blocks[0].attn
    assert attn.key_grid == (16, 16)
    assert attn.key_positional_encoding((16, 16)) is attn.positional_encoding
    assert attn.key_positional_encoding((10, 18)).shape == (1, 180, 16)


# ------------------------------------------------------- OpenMMLab API
def test_loading_224_weights_into_a_384_model_resizes_positional_encoding():
    # (stripes narrower than every stage map, so the structure is the same)
    small = randomise(tiny(pretrain_img_size=32, split_size=[1, 1, 1, 1]))
    large = tiny(pretrain_img_size=48, split_size=[1, 1, 1, 1])
    with pytest.warns(UserWarning, match='resized'):
        large.load_state_dict(small.state_dict(), strict=True)
    assert large.stages[1].blocks[0].attn.positional_encoding.shape == (1, 36,
                                                                        32)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_forward_is_finite_with_large_activations(dtype):
    torch.manual_seed(0)
    model = randomise(tiny(out_indices=(0, 1, 2, 3))).eval()
    with torch.no_grad():  # q, k of magnitude ~100: t**3 > fp16 max
        model.stages[0].blocks[0].attn.qkv.weight.mul_(100)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=dtype):
            outs = model(x)
    for o, r in zip(outs, ref):
        assert torch.isfinite(o).all()
        assert (o.float() - r).norm() / r.norm() < 0.1


# ------------------------------------------------------------ checkpoints
def test_converter_round_trip_strict():
    model = randomise(tiny())
    ours = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    ours['head.fc.weight'] = torch.randn(10, 128)
    ours['head.fc.bias'] = torch.randn(10)
    official = flatten_cswin_to_official(ours)
    assert {
        'stage1_conv_embed.0.weight', 'stage1_conv_embed.2.weight',
        'merge1.conv.weight', 'merge3.norm.bias', 'norm.weight', 'head.weight',
        'stage1.0.attns.0.get_v.weight',
        'stage1.0.attns.0.positional_encoding',
        'stage3.1.attns.1.get_v.weight', 'stage4.0.attns.0.get_v.weight'
    } <= set(official)
    back = convert_flatten_cswin_official({
        f'module.{k}': v
        for k, v in official.items()
    })
    assert set(back) == set(ours)
    for k, v in ours.items():
        assert back[k] is v
    tiny().load_state_dict(
        {
            k[len('backbone.'):]: v
            for k, v in back.items() if k.startswith('backbone.')
        },
        strict=True)
    with pytest.raises(KeyError, match='not FLatten-CSwin official keys'):
        convert_flatten_cswin_official({'stage1.0.attns.0.qkv.weight': 0})


def test_official_tiny_key_layout():
    model = FLattenCSWin('tiny')
    ours = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    ours['head.fc.weight'] = torch.zeros(1000, 512)
    ours['head.fc.bias'] = torch.zeros(1000)
    official = flatten_cswin_to_official(ours)
    assert len(official) == 430  # tensors of the official CSwin-T
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    assert shapes['stage1_conv_embed.0.weight'] == (64, 3, 7, 7)
    assert shapes['stage2.3.attns.0.positional_encoding'] == (1, 784, 128)
    assert shapes['stage2.3.attns.0.scale'] == (1, 1, 128)
    assert shapes['stage2.3.attns.0.dwc.weight'] == (32, 1, 5, 5)
    assert shapes['stage3.17.attns.1.get_v.weight'] == (128, 1, 3, 3)
    assert shapes['stage4.0.attns.0.get_v.weight'] == (512, 1, 3, 3)
    assert shapes['merge3.conv.weight'] == (512, 256, 3, 3)


def test_converter_cli_on_an_official_ema_file(tmp_path):
    """tools/model_converters/flatten2mmlinattn.py on a CSwin file holding
    only EMA weights (``main_ema.py``), written for mmseg (``--to seg``)."""
    path = osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
        'model_converters', 'flatten2mmlinattn.py')
    spec = importlib.util.spec_from_file_location('flatten2mmlinattn', path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    ours = {
        f'backbone.{k}': v
        for k, v in randomise(FLattenCSWin('tiny')).state_dict().items()
    }
    ours['head.fc.weight'] = torch.randn(1000, 512)
    ours['head.fc.bias'] = torch.randn(1000)
    official = flatten_cswin_to_official(ours)
    src, dst = tmp_path / 'flatten_cswin_t.pth', tmp_path / 'out.pth'
    torch.save({'state_dict_ema': official, 'max_accuracy_e': 83.1}, src)
    cli.main([str(src), str(dst), '--to', 'seg'])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['family'] == 'cswin'
    assert saved['meta']['arch'] == 'tiny'
    assert saved['meta']['weights'] == 'ema'
    expected = {k for k in ours if k.startswith('backbone.')}
    assert set(saved['state_dict']) == expected
    for k in expected:
        torch.testing.assert_close(saved['state_dict'][k], ours[k])


def test_attention_visualisation_covers_linear_and_stripe_blocks():
    """tools/visualization/vis_attention.py draws every FLatten-CSwin
    block: focused linear rows (as the direct formula) and stripe rows."""
    path = osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
        'visualization', 'vis_attention.py')
    spec = importlib.util.spec_from_file_location('vis_attention', path)
    vis = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vis)

    torch.manual_seed(0)
    model = randomise(tiny()).eval()
    image = torch.randn(1, 3, 64, 64)
    maps = dict(vis.attention_maps(model, image, query=(0.3, 0.6)))
    blocks = [
        f'stages.{i}.blocks.{j}.attn' for i, d in enumerate(TINY['depths'])
        for j in range(d)
    ]
    assert sorted(maps) == sorted(blocks)
    for name, weights in maps.items():
        assert weights.min() >= 0 and abs(weights.sum() - 1) < 1e-5, name
    # stage 3: two stripe branches of width 2 through the query (row 2,
    # column 1 of the 4 x 4 map); nothing outside the cross
    cross = maps['stages.2.blocks.0.attn']
    outside = np.ones((4, 4), bool)
    outside[2:4, :] = outside[:, 0:2] = False
    assert cross[outside].max() == 0 and cross[~outside].min() > 0
    # stage 1 (linear, 16 x 16): the head-mean row of the direct formula
    block = model.stages[0].blocks[0]
    captured = {}

    def keep_input(module, args):
        captured['x'] = args[0]

    block.register_forward_pre_hook(keep_input)
    with torch.no_grad():
        model(image)
        q, k, _ = block.attn.qkv(block.norm1(captured['x'][:1])).chunk(
            3, dim=-1)
        attn, query = block.attn, 9 * 16 + 4
        scale = F.softplus(attn.scale)[0, 0]

        def phi(t):
            t = (F.relu(t) + 1e-6) / scale
            return t**3 / (t**3).norm(
                dim=-1, keepdim=True) * t.norm(
                    dim=-1, keepdim=True)

        fq, fk = phi(q[0, query]), phi(k[0] + attn.positional_encoding[0])
        rows = [
            fk[:, c] @ fq[c] / (fk[:, c] @ fq[c]).sum()
            for c in (slice(0, 8), slice(8, 16))
        ]
    np.testing.assert_allclose(
        maps['stages.0.blocks.0.attn'].reshape(-1),
        torch.stack(rows).mean(0).numpy(),
        rtol=1e-4,
        atol=1e-7)
