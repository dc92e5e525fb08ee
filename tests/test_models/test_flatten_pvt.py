# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLattenPVT / FLattenPVTv2 backbones: variants, dense-prediction API,
initialisation and the official checkpoint layout."""
import copy

import pytest
import torch

from mmlinattn.models.attention import (FocusedLinearAttention,
                                        SpatialReductionAttention)
from mmlinattn.models.backbones.flatten_pvt import (
    FLattenPVT, FLattenPVTv2,
    convert_flatten_pvt_official, flatten_pvt_to_official)
from mmlinattn.testing import count_params

TINY = dict(
    embed_dims=[16, 16, 32, 32],
    depths=[1, 1, 1, 1],
    num_heads=[1, 1, 2, 2],
    mlp_ratios=[2, 2, 2, 2])
CLASSES = [FLattenPVT, FLattenPVTv2]


def tiny(cls, **kwargs):
    kwargs.setdefault('pretrain_img_size', 64)
    return cls(arch=TINY, **kwargs)


# Spec table (flatten.md §4): params of the official classifiers (with the
# 1000-class head, PVT v1 counting its unused final norm), in millions.
PARAMS_M = [
    (FLattenPVT, 'tiny', 12.15),
    (FLattenPVT, 'small', 21.67),
    (FLattenPVT, 'medium', 37.24),
    (FLattenPVT, 'large', 50.65),
    (FLattenPVTv2, 'b0', 3.59),
    (FLattenPVTv2, 'b1', 12.93),
    (FLattenPVTv2, 'b2', 22.55),
    (FLattenPVTv2, 'b3', 38.27),
    (FLattenPVTv2, 'b4', 51.84),
]


@pytest.mark.parametrize('cls,arch,expected', PARAMS_M)
def test_param_counts_match_official(cls, arch, expected):
    with torch.device('meta'):
        model = cls(arch=arch)
    dims = model.embed_dims[-1]
    head = dims * 1000 + 1000
    unused_norm = 2 * dims if cls is FLattenPVT else 0
    total = (count_params(model) + head + unused_norm) / 1e6
    assert abs(total - expected) / expected < 0.01 / 2, total


@pytest.mark.parametrize('cls,arch', [(c, a) for c, a, _ in PARAMS_M])
def test_every_variant_runs_on_an_odd_size(cls, arch):
    with torch.device('meta'):  # skip the (slow) random init
        model = cls(arch=arch, out_indices=(0, 1, 2, 3))
    model = model.to_empty(device='cpu').eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(0.01)
        outs = model(torch.randn(1, 3, 35, 51))
    sizes = [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert [tuple(o.shape[1:]) for o in outs
            ] == [(c, *hw) for c, hw in zip(model.embed_dims, sizes)]


def test_arch_errors():
    with pytest.raises(
            ValueError,
            match=r"Arch unknown is not in default "
            r"archs \['b', 'l', 'large', 'm', 'medium'"):
        FLattenPVT(arch='unknown')
    with pytest.raises(ValueError, match=r"not in default archs \['b0'"):
        FLattenPVTv2(arch='tiny')
    with pytest.raises(ValueError, match="missing \\['mlp_ratios'\\]"):
        FLattenPVT(
            arch=dict(embed_dims=[8] * 4, depths=[1] * 4, num_heads=[1] * 4))
    with pytest.raises(ValueError, match='needs one entry per stage'):
        FLattenPVT(arch=dict(TINY, depths=[1, 1, 1]))
    with pytest.raises(ValueError, match="attn_type must be 4 characters"):
        tiny(FLattenPVT, attn_type='LLM2')
    with pytest.raises(ValueError, match='la_sr_ratios'):
        tiny(FLattenPVT, la_sr_ratios=(1, 1, 0, 1))
    with pytest.raises(ValueError, match='focusing_factor must be'):
        tiny(FLattenPVT, focusing_factor=0)
    with pytest.raises(ValueError, match='kernel_size must be a positive odd'):
        tiny(FLattenPVTv2, kernel_size=2)
    with pytest.raises(TypeError, match='pretrained must be'):
        tiny(FLattenPVT, pretrained=123)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        tiny(FLattenPVT)(torch.randn(3, 32, 32))


def test_arch_aliases():
    assert FLattenPVT.arch_zoo['b'] == FLattenPVT.arch_zoo['large']
    assert FLattenPVT.arch_zoo['t'] == FLattenPVT.arch_zoo['tiny']


@pytest.mark.parametrize('cls', CLASSES)
@pytest.mark.parametrize('size', [(64, 64), (63, 65), (33, 47), (96, 32)])
def test_forward_shapes_any_size(cls, size):
    model = tiny(cls, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert isinstance(outs, tuple) and len(outs) == 4
    h, w = size
    for i, out in enumerate(outs):
        h, w = -(-h // (4 if i == 0 else 2)), -(-w // (4 if i == 0 else 2))
        assert out.shape == (2, TINY['embed_dims'][i], h, w)
        assert out.is_contiguous() and out.isfinite().all()


@pytest.mark.parametrize('cls', CLASSES)
def test_out_indices(cls):
    model = tiny(cls, out_indices=(1, -1)).eval()
    assert model.out_indices == (1, 3)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]
    with pytest.raises(ValueError, match='out of range'):
        tiny(cls, out_indices=(4, ))


@pytest.mark.parametrize('cls', CLASSES)
def test_no_interpolation_at_pretrain_size(cls, monkeypatch):
    model = tiny(cls).eval()
    calls = []
    interpolate = torch.nn.functional.interpolate

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return interpolate(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, 'interpolate', counting)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        assert calls == []
        model(torch.randn(1, 3, 96, 64))
    # one positional_encoding per block (+ one pos_embed per stage for v1)
    expected = 4 + (4 if cls is FLattenPVT else 0)
    assert len(calls) == expected


def test_pos_embed_resized_bilinearly():
    model = tiny(FLattenPVT).eval()
    stage = model.stages[0]
    x = torch.randn(1, 3, 96, 64)
    tokens, hw = model.patch_embed(x)
    assert hw == (24, 16) and stage.grid == (16, 16)
    grid = stage.pos_embed.reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(
        grid, size=(24, 16), mode='bilinear').flatten(2).transpose(1, 2)
    captured = {}
    block = stage.blocks[0]
    block.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    with torch.no_grad():
        stage(tokens, hw)
    torch.testing.assert_close(captured['x'], tokens + expected)


@pytest.mark.parametrize('cls', CLASSES)
def test_softmax_and_reduced_stages(cls):
    model = tiny(
        cls,
        attn_type='LSLS',
        la_sr_ratios=(2, 1, 1, 1),
        sr_ratios=(4, 2, 2, 1),
        out_indices=(0, 1, 2, 3))
    attns = [stage.blocks[0].attn for stage in model.stages]
    assert isinstance(attns[0], FocusedLinearAttention)
    assert attns[0].sr_ratio == 2 and attns[0].key_grid == (8, 8)
    assert isinstance(attns[1], SpatialReductionAttention)
    assert attns[1].sr_ratio == 2 and hasattr(attns[1], 'sr')
    outs = model(torch.randn(2, 3, 64, 48))
    sum(o.sum() for o in outs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name


def test_softmax_attention_matches_explicit_softmax():
    attn = SpatialReductionAttention(16, 2, sr_ratio=2).double()
    x = torch.randn(2, 48, 16, dtype=torch.float64)
    q, k, v, kv_hw = attn.project(x, (8, 6))
    assert kv_hw == (4, 3)
    weights = (q @ k.transpose(-2, -1) * 8**-0.5).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 48, 16))
    torch.testing.assert_close(attn(x, (8, 6)), expected)


def test_official_initialisation():
    torch.manual_seed(0)
    v1 = FLattenPVT('tiny')
    attn = v1.stages[0].blocks[0].attn
    assert (attn.scale == 0).all() and (attn.positional_encoding == 0).all()
    assert attn.positional_encoding.shape == (1, 3136, 64)
    assert 0.015 < v1.stages[0].pos_embed.std() < 0.025
    assert 0.015 < attn.q.weight.std() < 0.025 and (attn.q.bias == 0).all()
    # PVT v1 keeps PyTorch's default conv init (uniform, |w| <= 1/sqrt(25))
    assert attn.dwc.weight.abs().max() <= 0.2
    v2 = FLattenPVTv2('b0')
    dwc = v2.stages[0].blocks[0].attn.dwc
    # PVTv2: normal(0, sqrt(2 / fan_out)), fan_out = 25 for a depthwise 5x5
    assert 0.2 < dwc.weight.std() < 0.36 and (dwc.bias == 0).all()
    # init_weights() without init_cfg keeps the construction-time init
    before = copy.deepcopy(v2.state_dict())
    v2.init_weights()
    for key, value in v2.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_loading_other_grid_resizes_position_parameters():
    source = tiny(FLattenPVT, pretrain_img_size=96)
    with torch.no_grad():
        for param in source.parameters():
            param.normal_()
    model = tiny(FLattenPVT, pretrain_img_size=64)
    with pytest.warns(UserWarning, match='resized 24x24 -> 16x16'):
        model.load_state_dict(source.state_dict(), strict=True)
    pe = model.stages[0].blocks[0].attn.positional_encoding
    src = source.stages[0].blocks[0].attn.positional_encoding
    expected = torch.nn.functional.interpolate(
        src.reshape(1, 24, 24, -1).permute(0, 3, 1, 2),
        size=(16, 16),
        mode='bicubic').flatten(2).transpose(1, 2)
    torch.testing.assert_close(pe, expected)


@pytest.mark.parametrize('cls,arch', [(FLattenPVT, 'tiny'),
                                      (FLattenPVTv2, 'b0')])
def test_official_key_layout(cls, arch):
    with torch.device('meta'):
        model = cls(arch=arch)
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    dims = model.embed_dims[-1]
    state['head.fc.weight'] = torch.empty(1000, dims, device='meta')
    state['head.fc.bias'] = torch.empty(1000, device='meta')
    official = flatten_pvt_to_official(state)
    shapes = {k: tuple(v.shape) for k, v in official.items()}
    if cls is FLattenPVT:  # spec §5: 168 tensors for PVT-T
        assert len(official) == 168
        for i, n in enumerate([3136, 784, 196, 49], 1):
            assert shapes[f'pos_embed{i}'][1] == n
            pe = shapes[f'block{i}.0.attn.positional_encoding']
            assert pe[1] == n
        assert shapes['block1.0.attn.dwc.weight'] == (64, 1, 5, 5)
        assert shapes['patch_embed1.proj.weight'] == (64, 3, 4, 4)
        assert shapes['norm.weight'] == (512, )
    else:
        assert shapes['block1.0.attn.dwc.weight'] == (32, 1, 5, 5)
        assert shapes['block1.0.mlp.dwconv.dwconv.weight'] == (256, 1, 3, 3)
        assert shapes['patch_embed1.proj.weight'] == (32, 3, 7, 7)
        assert shapes['patch_embed2.proj.weight'] == (64, 32, 3, 3)
        assert shapes['norm4.weight'] == (
            256, ) and 'norm.weight' not in shapes
        assert not any(k.startswith('pos_embed') for k in shapes)
    assert shapes['head.weight'] == (1000, dims)
    assert 'block1.0.attn.scale' in shapes
    assert 'block4.1.attn.q.weight' in shapes


@pytest.mark.parametrize('cls', CLASSES)
def test_converter_round_trip_strict(cls):
    source = tiny(cls, attn_type='LLSL', la_sr_ratios=(2, 1, 1, 1))
    with torch.no_grad():
        for param in source.parameters():
            param.normal_()
    ours = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    ours['head.fc.weight'] = torch.randn(10, 32)
    ours['head.fc.bias'] = torch.randn(10)
    official = flatten_pvt_to_official(ours)
    official = {f'module.{k}': v for k, v in official.items()}  # DDP dump
    back = convert_flatten_pvt_official(official)
    assert back.keys() == ours.keys()
    for key in ours:
        assert torch.equal(back[key], ours[key]), key
    target = tiny(cls, attn_type='LLSL', la_sr_ratios=(2, 1, 1, 1))
    target.load_state_dict(
        {
            k[len('backbone.'):]: v
            for k, v in back.items() if k.startswith('backbone.')
        },
        strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source.eval()(x), target.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(KeyError, match='not FLatten-PVT'):
        convert_flatten_pvt_official({'layers.0.blocks.0.attn.qkv.weight': 0})
