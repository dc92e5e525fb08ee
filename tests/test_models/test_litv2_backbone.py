# Copyright (c) mmlinattn contributors. All rights reserved.
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmlinattn.models.attention import HiLoAttention
from mmlinattn.models.backbones.litv2 import LITv2
from mmlinattn.utils.flops import deform_conv2d_flop_jit
from mmlinattn.testing import count_params

TINY = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])


def tiny(**kwargs) -> LITv2:
    kwargs.setdefault('arch', TINY)
    return LITv2(**kwargs)


def dcn_flops(x_shape, weight_shape, *args, out_shape, **kwargs) -> int:
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def test_arch():
    with pytest.raises(ValueError, match='Arch tiny is not in default archs'):
        LITv2(arch='tiny')
    with pytest.raises(ValueError, match='Custom arch needs a dict with keys'):
        LITv2(arch=dict(embed_dims=16, depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match='depths needs one entry per stage'):
        LITv2(arch=dict(embed_dims=16, depths=[1, 1, 1], num_heads=[1] * 4))
    model = LITv2(arch=dict(embed_dims=[8, 16, 24, 32], **{
        k: TINY[k]
        for k in ('depths', 'num_heads')
    }))
    assert model.num_features == [8, 16, 24, 32]
    assert model.stages[3].downsample.dconv.weight.shape == (32, 24, 2, 2)


@pytest.mark.parametrize('arch, params_m, blocks',
                         [('s', 27.844, [2, 2, 6, 2]),
                          ('medium', 48.830, [2, 2, 18, 2]),
                          ('b', 86.521, [2, 2, 18, 2])])
def test_params_and_layout_every_arch(arch, params_m, blocks):
    """Backbone + 1000-class head has the official parameter count; stages
    1-2 are ConvFFN blocks and 3-4 HiLo blocks; odd input sizes give the
    right shapes (meta device: full-size models without the compute)."""
    with torch.device('meta'):
        model = LITv2(arch, out_indices=(0, 1, 2, 3)).eval()
    C = model.num_features
    head = C[3] * 1000 + 1000
    backbone = count_params(model) - 2 * (C[1] + C[2])  # norm1, norm2
    assert round((backbone + head) / 1e6, 3) == params_m
    assert [len(stage.blocks) for stage in model.stages] == blocks
    for i, stage in enumerate(model.stages):
        kind = HiLoAttention if i >= 2 else type(None)
        assert all(type(b.attn) is kind for b in stage.blocks)
    assert model.stages[3].blocks[0].attn.h_heads == 0  # ws 1: global MSA
    assert model.stages[2].blocks[0].attn.h_heads == 2
    with torch.no_grad():
        outs = model(torch.empty(1, 3, 45, 61, device='meta'))
    assert [tuple(o.shape) for o in outs] == [(1, C[0], 12, 16),
                                             (1, C[1], 6, 8),
                                             (1, C[2], 3, 4),
                                             (1, C[3], 1, 2)]


def test_classifier_state_dict_has_219_tensors():
    with torch.device('meta'):
        model = LITv2('s')
    assert len(model.state_dict()) + 2 == 219  # + head weight and bias
    assert [k for k in model.state_dict() if k.startswith('norm')] == [
        'norm3.weight', 'norm3.bias'
    ]


@pytest.mark.parametrize('arch, res, gmacs', [('s', 224, 3.734),
                                              ('m', 224, 7.479),
                                              ('b', 224, 13.194),
                                              ('b', 384, 39.709)])
def test_flops_close_to_official(arch, res, gmacs):
    """Matmul/conv MACs (incl. the 1000-class head) on the meta device are
    within 0.5% of the official ``model.flops()``, which also counts
    LayerNorm, biases and 12 instead of 8 offset channels."""
    with torch.device('meta'):
        model = LITv2(arch).eval()
    mapping = {torch.ops.torchvision.deform_conv2d: dcn_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, \
            sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(torch.empty(1, 3, res, res, device='meta'))
    macs = counter.get_total_flops() / 2 + model.num_features[3] * 1000
    assert macs / 1e9 == pytest.approx(gmacs, rel=5e-3)
    assert macs / 1e9 < gmacs


def test_mmengine_flop_handle_for_deform_conv():
    from mmengine.analysis import FlopAnalyzer
    model = tiny(out_indices=(1, )).eval()
    analyzer = FlopAnalyzer(model, torch.randn(1, 3, 64, 64))
    analyzer.set_op_handle('torchvision::deform_conv2d',
                           deform_conv2d_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    by_op = analyzer.by_operator()
    # The one DTM before stage 1: 16 -> 32 channels, 2x2 taps, 8x8 output.
    assert by_op['deform_conv2d'] == 32 * 16 * 4 * 8 * 8
    assert 'torchvision::deform_conv2d' not in analyzer.unsupported_ops()


@pytest.mark.parametrize('hw, sizes',
                         [((97, 131), [(25, 33), (12, 16), (6, 8), (3, 4)]),
                          ((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
                          ((29, 33), [(8, 9), (4, 4), (2, 2), (1, 1)])])
def test_forward_shapes_any_size(hw, sizes):
    model = tiny(out_indices=(0, 1, 2, 3), local_ws=(0, 0, 4, 1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert [tuple(o.shape[2:]) for o in outs] == sizes
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128]
    assert all(o.is_contiguous() for o in outs)


def test_too_small_input_names_the_fix():
    model = tiny()
    with pytest.raises(ValueError, match='at least 29x29 pixels'):
        model(torch.randn(1, 3, 28, 64))
    stage1 = tiny(out_indices=(1, )).eval()
    assert stage1(torch.randn(1, 3, 5, 5))[0].shape[-2:] == (1, 1)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 64, 64))


def test_out_indices_and_output_norms():
    det = tiny(out_indices=(0, 1, 2, 3))
    assert not hasattr(det, 'norm0')
    assert all(hasattr(det, f'norm{i}') for i in (1, 2, 3))
    seg = tiny(out_indices=(0, 1, 2, 3), with_stage0_norm=True)
    assert all(hasattr(seg, f'norm{i}') for i in range(4))
    retina = tiny(out_indices=(1, 2, 3))
    assert [hasattr(retina, f'norm{i}') for i in range(4)] == [
        False, True, True, True
    ]
    assert tiny(out_indices=-1).out_indices == (3, )
    # Stage 0 is output raw without norm0 and normalised with it.
    det.eval(), seg.eval()
    seg.load_state_dict(det.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw, normed = det(x)[0], seg(x)[0]
        expected = seg.norm0(raw.flatten(2).transpose(1, 2))
    torch.testing.assert_close(normed.flatten(2).transpose(1, 2), expected)


def test_ws4_variant_loads_ws2_weights():
    ws2 = tiny(out_indices=(3, ))
    ws4 = tiny(out_indices=(3, ), local_ws=(0, 0, 4, 1))
    ws4.load_state_dict(ws2.state_dict(), strict=True)
    assert ws4.stages[2].blocks[0].attn.window_size == 4


def test_original_init_kept_by_init_weights():
    model = tiny()
    offset = model.stages[1].downsample.dconv.conv_offset
    assert torch.count_nonzero(offset.weight) == 0
    dw = model.stages[0].blocks[0].mlp.dwconv.dwconv
    expected_std = math.sqrt(2 / 9)
    assert dw.weight.std().item() == pytest.approx(expected_std, rel=0.2)
    assert torch.count_nonzero(dw.bias) == 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_batch_independent_in_eval():
    model = tiny(out_indices=(0, 1, 2, 3)).eval()
    x = torch.randn(3, 3, 37, 45)
    with torch.no_grad():
        batched = model(x)
        single = [model(x[i:i + 1]) for i in range(3)]
    for level, out in enumerate(batched):
        torch.testing.assert_close(
            out, torch.cat([s[level] for s in single]), rtol=1e-4, atol=1e-5)


def _litv2_configs():
    from pathlib import Path
    root = Path(__file__).parents[2] / 'configs'
    return sorted([str(p) for p in root.glob('classification/litv2*.py')] +
                  [str(p) for p in root.glob('*/*litv2_demo_shapes.py')])


@pytest.mark.parametrize('path', _litv2_configs())
def test_litv2_classifiers_and_demos_train_the_offsets_at_0_01_lr(path):
    """The official classification recipe (OFFSET_LR_MULTI 0.01): DTM's
    offset-conv weights at 0.01x the lr, which the demos (cls, det, seg)
    follow too: the demo classifier collapsed to chance without it. (The
    official detection / segmentation recipes have no multiplier; their
    configs follow them.) The optimizer built from the config applies
    it."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    cfg = Config.fromfile(path)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['.conv_offset.weight'] == dict(lr_mult=0.01)
    model = torch.nn.Module()
    model.backbone = LITv2(
        arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]))
    optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    lrs = {}
    for group in build_optim_wrapper(model, optim_cfg).param_groups:
        for p in group['params']:
            lrs[p] = group['lr']
    base = cfg.optim_wrapper.optimizer.lr
    for name, p in model.named_parameters():
        expected = base * (.01 if name.endswith('conv_offset.weight') else 1)
        assert lrs[p] == pytest.approx(expected), name
