# Copyright (c) mmlinattn contributors. All rights reserved.
"""UFOViT backbone: arch zoo, shapes, adapter, OpenMMLab backbone API."""
import pytest
import torch
import torch.nn as nn
from mmengine.runner import save_checkpoint

from mmlinattn.models.attention.xnorm_attention import XNormAttention
from mmlinattn.models.backbones.ufo_vit import (LPI, UFOBlock, UFOClassBlock,
                                                UFOViT)
from mmlinattn.testing import count_params

TINY = dict(embed_dims=32, depth=4, num_heads=2)
DENSE = dict(
    arch=TINY, img_size=64, out_type='featmap', out_indices=(0, 1, 2, 3))


def all_blocks(model: UFOViT) -> list:
    """The blocks of every stage, in order."""
    return [block for stage in model.stages for block in stage.blocks]


def expected_params(C: int,
                    depth: int,
                    heads: int,
                    grid: int,
                    cls_layers: int = 2,
                    layer_scale: bool = True) -> int:
    """Closed-form parameter count of the classification backbone
    (patch 16, FFN ratio 4, separate gammas)."""
    widths = [3, C // 8, C // 4, C // 2, C]
    stem = sum(9 * a * b + 2 * b for a, b in zip(widths, widths[1:]))
    attn = 4 * C * C + 4 * C + 2 * heads
    ffn = 8 * C * C + 5 * C
    lpi = 2 * (9 * C + C) + 2 * 2 * C
    ls = C if layer_scale else 0
    block = 3 * 2 * C + attn + lpi + ffn + 3 * ls
    cls_block = 2 * 2 * C + attn + ffn + 2 * ls
    return (stem + grid * C + depth * block + cls_layers * cls_block + C +
            2 * C)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'medium', 'base'])
def test_variants_shapes_and_params(arch):
    settings = UFOViT.arch_zoo[arch]
    model = UFOViT(arch).eval()
    C = settings['embed_dims']
    assert count_params(model) == expected_params(C, settings['depth'],
                                                  settings['num_heads'], 196)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 35, 29))  # odd size, 3 x 2 grid
    assert len(outs) == 1 and outs[0].shape == (1, C)
    assert len(all_blocks(model)) == settings['depth']
    assert all(b.attn.key_dims == C // settings['num_heads']
               for b in all_blocks(model))


def test_arch_zoo_is_the_xcit_grid():
    """Documented as XCiT-T12 / S12 / S24 / M24 sizes, not the paper's."""
    grid = {(C, d, h)
            for C, d, h in [(192, 12, 4), (384, 12, 8), (384, 24,
                                                         8), (512, 24, 8)]}
    zoo = {(a['embed_dims'], a['depth'], a['num_heads'])
           for a in UFOViT.arch_zoo.values()}
    assert zoo == grid
    assert UFOViT.arch_zoo['t'] is UFOViT.arch_zoo['tiny']


def test_arch_errors():
    with pytest.raises(ValueError, match='Arch huge is not in default archs'):
        UFOViT('huge')
    with pytest.raises(
            ValueError,
            match=r"Custom arch needs a dict with keys "
            r".*missing \['num_heads'\]"):
        UFOViT(dict(embed_dims=32, depth=4))
    with pytest.raises(ValueError, match='is not divisible by num_heads'):
        UFOViT(dict(embed_dims=40, depth=4, num_heads=3))
    with pytest.raises(ValueError, match='every stage needs at least one'):
        UFOViT(dict(embed_dims=32, depth=3, num_heads=2))


def test_custom_arch_without_layer_scale():
    model = UFOViT(TINY, img_size=32)
    assert all_blocks(model)[0].ls1 is None
    assert count_params(model) == expected_params(
        32, 4, 2, 4, layer_scale=False)


def test_classification_forward_and_grad():
    model = UFOViT(TINY, img_size=64, num_cls_layers=1)
    assert len(model.cls_blocks) == 1
    out = model(torch.randn(2, 3, 64, 64))
    assert len(out) == 1 and out[0].shape == (2, 32)
    out[0].sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize('hw, grid', [((64, 64), (4, 4)), ((63, 65), (4, 5)),
                                      ((33, 47), (3, 3)), ((17, 16), (2, 1))])
def test_dense_outputs_strides_4_8_16_32(hw, grid):
    model = UFOViT(**DENSE).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    gh, gw = grid  # ceil(H / 16) x ceil(W / 16)
    expected = [(4 * gh, 4 * gw), (2 * gh, 2 * gw), (gh, gw),
                (-(-gh // 2), -(-gw // 2))]
    assert [o.shape[-2:] for o in outs] == expected
    assert all(o.shape[:2] == (2, 32) for o in outs)
    assert not hasattr(model, 'cls_token')


def test_dense_patch8_adapter():
    model = UFOViT(**dict(DENSE, patch_size=8)).eval()
    assert isinstance(model.adapter1, nn.Identity)
    assert isinstance(model.adapter2, nn.MaxPool2d)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_dense_subset_builds_only_used_parts():
    """RetinaNet-style out_indices=(1, 2, 3): no unused parameters."""
    model = UFOViT(**dict(DENSE, out_indices=(1, 2, 3)))
    assert not hasattr(model, 'adapter0') and not hasattr(model, 'norm0')
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [8, 4, 2]
    sum(o.sum() for o in outs).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_stage_ends():
    assert UFOViT(
        dict(embed_dims=32, depth=12, num_heads=2),
        img_size=32).stage_ends == (2, 5, 8, 11)
    model = UFOViT(
        dict(embed_dims=32, depth=12, num_heads=2),
        img_size=32,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        stage_ends=(3, 5, 7, 11),
        frozen_stages=1)
    frozen = [not b.attn.qkv.weight.requires_grad for b in all_blocks(model)]
    assert frozen == [True] * 4 + [False] * 8
    with pytest.raises(ValueError, match='stage_ends must be 4 strictly'):
        UFOViT(TINY, stage_ends=(0, 1, 2))
    with pytest.raises(ValueError, match='ending at depth - 1 = 3'):
        UFOViT(TINY, stage_ends=(0, 1, 2, 2))


def test_out_type_errors():
    with pytest.raises(ValueError, match="set out_type='featmap'"):
        UFOViT(TINY, out_indices=(0, 1, 2, 3))
    with pytest.raises(ValueError, match='out_type must be one of'):
        UFOViT(TINY, out_type='raw')
    with pytest.raises(ValueError, match='out of range for 4 stages'):
        UFOViT(**dict(DENSE, out_indices=(4, )))
    with pytest.raises(ValueError, match='patch_size must be a power of two'):
        UFOViT(TINY, patch_size=12)


def test_bad_input_names_the_fix():
    model = UFOViT(TINY, img_size=32)
    with pytest.raises(ValueError, match=r'in_channels = 3, got shape'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='set in_channels'):
        model(torch.randn(3, 32, 32))
    gray = UFOViT(TINY, img_size=32, in_channels=1)
    assert gray(torch.randn(1, 1, 32, 32))[0].shape == (1, 32)


def test_position_embedding_interpolation_and_resize_on_load():
    model = UFOViT(TINY, img_size=32)  # 2 x 2 grid
    assert model.pos_embed.shape == (1, 4, 32)
    with torch.no_grad():
        model.pos_embed.normal_()
    big = UFOViT(TINY, img_size=64)  # 4 x 4 grid
    big.load_state_dict(model.state_dict())
    assert big.pos_embed.shape == (1, 16, 32)
    corner = big.pos_embed[0, 0].detach()
    assert not torch.allclose(corner, torch.zeros_like(corner))
    # resizing on load == resizing at runtime
    model.eval()
    big.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.allclose(model(x)[0], big(x)[0], atol=1e-5)


def test_with_cp_same_result_and_bn_updated_once():
    torch.manual_seed(0)
    ref = UFOViT(**DENSE)
    cp_model = UFOViT(**dict(DENSE, with_cp=True))
    cp_model.load_state_dict(ref.state_dict())
    blocks = [
        m for m in cp_model.modules()
        if isinstance(m, (UFOBlock, UFOClassBlock))
    ]
    assert blocks and all(b.with_cp for b in blocks)
    x = torch.randn(2, 3, 64, 64)
    outs = [sum(o.sum() for o in m(x)) for m in (ref, cp_model)]
    for out in outs:
        out.backward()
    assert torch.allclose(outs[0], outs[1], rtol=1e-5)
    g_ref = all_blocks(ref)[0].attn.qkv.weight.grad
    g_cp = all_blocks(cp_model)[0].attn.qkv.weight.grad
    assert torch.allclose(g_ref, g_cp, rtol=1e-4, atol=1e-6)
    lpi_bn = all_blocks(cp_model)[0].lpi.bn1
    assert lpi_bn.num_batches_tracked.item() == 1
    cls_model = UFOViT(TINY, img_size=32, with_cp=True)
    assert all(b.with_cp for b in cls_model.cls_blocks)
    cls_model(torch.randn(1, 3, 32, 32))[0].sum().backward()


def test_frozen_last_stage_freezes_class_attention():
    model = UFOViT(TINY, img_size=32, frozen_stages=4)
    model.train()
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.cls_blocks.training


def test_init_weights_keeps_construction_init():
    model = UFOViT(TINY, img_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k
    assert all_blocks(model)[0].ffn.fc1.weight.std().item() == pytest.approx(
        0.02, rel=0.2)
    attn = all_blocks(model)[0].attn
    assert torch.equal(attn.gamma_q.detach(), torch.ones_like(attn.gamma_q))


def test_attn_cfg_reaches_every_attention():
    model = UFOViT(
        TINY,
        img_size=32,
        attn_cfg=dict(gamma_mode='shared', kv_norm_axis=-2, eps=1e-4))
    attns = [m for m in model.modules() if isinstance(m, XNormAttention)]
    assert len(attns) == 4 + 2
    assert all((a.gamma_mode, a.kv_norm_axis, a.eps) == ('shared', -2, 1e-4)
               for a in attns)
    assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 32)


def test_pretrained_classifier_into_dense_backbone(tmp_path):
    """ImageNet classifier weights (``backbone.`` prefix) load into the
    detection backbone; the adapter and output norms stay initialised."""
    cls_model = UFOViT(TINY, img_size=32)
    with torch.no_grad():
        for p in cls_model.parameters():
            p.add_(1.)
    ckpt = str(tmp_path / 'cls.pth')
    state = {f'backbone.{k}': v for k, v in cls_model.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 32)
    save_checkpoint({'state_dict': state}, ckpt)
    dense = UFOViT(**dict(
        DENSE,
        init_cfg=dict(type='Pretrained', checkpoint=ckpt, prefix='backbone.')))
    dense.init_weights()
    ref = cls_model.state_dict()
    for k, v in dense.state_dict().items():
        if k == 'pos_embed':  # 2 x 2 checkpoint grid resized to 4 x 4
            assert v.shape == (1, 16, 32)
        elif k.startswith(('norm', 'adapter')):
            assert k not in ref
        else:
            assert torch.equal(v, ref[k]), k


def test_get_layer_depth():
    model = UFOViT(TINY, img_size=32)
    assert model.get_layer_depth('backbone.patch_embed.proj.0.weight',
                                 'backbone.') == (0, 6)
    assert model.get_layer_depth('backbone.stages.2.blocks.0.attn.qkv.weight',
                                 'backbone.') == (3, 6)
    assert model.get_layer_depth('backbone.cls_blocks.0.ls1',
                                 'backbone.') == (5, 6)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (5, 6)


def test_lpi_is_local():
    """LPI mixes 3x3 neighbourhoods per layer: changing one token changes
    exactly the 5x5 window around it (two layers)."""
    torch.manual_seed(0)
    lpi = LPI(4).eval()
    x = torch.randn(2, 81, 4)
    y = x.clone()
    y[:, 40] += 1.  # centre token (4, 4) of a 9 x 9 grid
    with torch.no_grad():
        changed = (lpi(y, (9, 9)) - lpi(x, (9, 9))).abs().sum(-1) > 0
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[2:7, 2:7] = True
    assert torch.equal(changed[0].reshape(9, 9), expected)
    assert torch.equal(changed[1].reshape(9, 9), expected)
