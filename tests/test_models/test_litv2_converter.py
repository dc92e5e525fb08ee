# Copyright (c) mmlinattn contributors. All rights reserved.
"""Official LITv2 checkpoints -> mmlinattn: functions and CLI."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmlinattn.models.backbones.litv2 import (LITv2, convert_litv2_official,
                                              to_official)

TOOL = Path(__file__).parents[2] / 'tools/model_converters/litv22mmlinattn.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('litv22mmlinattn', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Classifier(nn.Module):
    """The state-dict layout of an mmpretrain ImageClassifier with GAP and
    a LinearClsHead (``backbone.*``, ``head.fc.*``)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = LITv2(**kwargs)
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.backbone.num_features[3], 1000)

    def forward(self, x):
        return self.head.fc(self.backbone(x)[-1].mean((2, 3)))


def randomise_buffers(model: nn.Module) -> nn.Module:
    for name, buf in model.named_buffers():
        if buf.is_floating_point():
            buf.uniform_(0.5, 1.5)
    for module in model.modules():
        if hasattr(module, 'conv_offset'):
            nn.init.normal_(module.conv_offset.weight, std=0.1)
    return model.eval()


def test_function_round_trip_official_layout():
    arch = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])
    model = randomise_buffers(Classifier(arch=arch))
    official = to_official(model.state_dict())
    assert {'norm.weight', 'head.weight', 'patch_embed.proj.weight',
            'layers.0.downsample.dconv.conv_offset.weight',
            'layers.0.downsample.norm_layer.running_var',
            'layers.0.blocks.0.mlp.dwconv.dwconv.weight',
            'layers.2.blocks.0.attn.h_qkv.weight',
            'layers.3.blocks.0.attn.l_kv.weight'} <= set(official)
    assert not any(k.startswith(('backbone', 'norm3')) for k in official)
    ddp = {f'module.{k}': v for k, v in official.items()}
    restored = Classifier(arch=arch).eval()
    restored.load_state_dict(convert_litv2_official(ddp), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


def test_cli_classification_round_trip(tmp_path):
    tool = load_tool()
    torch.manual_seed(0)
    model = randomise_buffers(Classifier(arch='s'))
    src, dst = tmp_path / 'litv2_s.pth', tmp_path / 'out/litv2_small.pth'
    torch.save({'model': to_official(model.state_dict()), 'epoch': 299},
               src)
    tool.main([str(src), str(dst)])
    saved = torch.load(dst, weights_only=True)
    meta = saved['meta']
    assert meta['arch'] == 'small' and meta['alpha'] == 0.9
    assert meta['with_stage0_norm'] is False
    assert len(meta['source_sha256']) == 64
    with torch.device('meta'):
        restored = Classifier(arch=meta['arch'], alpha=meta['alpha']).eval()
    restored.load_state_dict(saved['state_dict'], strict=True, assign=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)

    # Backbone only for dense configs: no head, no output norms (fresh, as
    # in the official dense code).
    det = tmp_path / 'litv2_small_backbone.pth'
    tool.main([str(src), str(det), '--to', 'det'])
    state = torch.load(det, weights_only=True)['state_dict']
    assert all(k.startswith('backbone.') for k in state)
    assert not any(k.startswith(('backbone.norm', 'head')) for k in state)
    with torch.device('meta'):
        dense = LITv2('s', out_indices=(0, 1, 2, 3))
    result = dense.load_state_dict(
        {k[len('backbone.'):]: v
         for k, v in state.items()}, strict=False)
    assert sorted(result.missing_keys) == [
        f'norm{i}.{p}' for i in (1, 2, 3) for p in ('bias', 'weight')
    ]
    assert not result.unexpected_keys


@pytest.mark.parametrize('alpha, lofi_heads', [(0.2, 2), (0.7, 8), (0., 0),
                                               (1., 12)])
def test_alpha_sweep_checkpoints(alpha, lofi_heads):
    tool = load_tool()
    with torch.device('meta'):
        model = Classifier(arch='s', alpha=alpha)
    state_dict, meta = tool.convert({'model': to_official(model.state_dict())})
    assert meta['alpha'] == alpha
    assert int(12 * meta['alpha']) == lofi_heads


@pytest.mark.parametrize('with_stage0_norm', [False, True])
def test_dense_checkpoints_kept_whole(with_stage0_norm):
    """Detection (norm1..3) and segmentation (norm0..3) checkpoints in the
    official names (``backbone.layers.*``): the whole model is kept for
    load_from."""
    tool = load_tool()
    with torch.device('meta'):
        classifier = to_official(Classifier(arch='b').state_dict())
    state = {
        f'backbone.{k}': v
        for k, v in classifier.items() if not k.startswith(('head.', 'norm.'))
    }
    for i in range(0 if with_stage0_norm else 1, 4):
        for name in ('weight', 'bias'):
            state[f'backbone.norm{i}.{name}'] = torch.empty(128 * 2**i)
    state['neck.lateral_convs.0.conv.weight'] = torch.empty(256, 128, 1, 1)
    state_dict, meta = tool.convert({'state_dict': state, 'meta': {}})
    assert state_dict.keys() == convert_litv2_official(state).keys()
    assert meta['arch'] == 'base'
    assert meta['with_stage0_norm'] is with_stage0_norm
    assert meta['layout'] == 'full model (load_from)'
    with pytest.raises(ValueError, match='cannot be written as a classifier'):
        tool.convert({'state_dict': state}, to='cls')


def test_mismatch_is_reported():
    tool = load_tool()
    with torch.device('meta'):
        model = Classifier(arch='s')
    official = to_official(model.state_dict())
    del official['layers.1.downsample.dconv.conv_offset.bias']
    official['layers.1.extra'] = torch.empty(1)
    with pytest.raises(RuntimeError) as err:
        tool.convert({'model': official})
    # reported in our layout: the merging after stage 1 opens stage 2
    assert 'missing stages.2.downsample.dconv.conv_offset.bias' in str(
        err.value)
    assert 'unexpected layers.1.extra' in str(err.value)
    with pytest.raises(KeyError, match='no weights found'):
        tool.convert({'optimizer': {}})
