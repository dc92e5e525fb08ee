# Copyright (c) mmlinattn contributors. All rights reserved.
"""The backbone contract, once for every backbone: NCHW outputs for any
input size, the stage contract, frozen_stages (0 = stem), norm_eval,
with_cp, init_cfg Pretrained with prefix, autocast, a strict state-dict
round trip, files of the layout before the stage contract, registry names.

Family test files keep only what is family-specific."""
import re

import pytest
import torch
import torch.nn as nn
from mmengine.runner import save_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmlinattn.models.utils import LinAttnBackbone, Stage
from mmlinattn.registry import MODELS
from mmlinattn.testing import TINY_BACKBONES

BACKBONES = {
    name: (MODELS.get(name), kwargs, strides)
    for name, (kwargs, strides) in TINY_BACKBONES.items()
}

NAMES = sorted(BACKBONES)


def build(name: str, **kwargs) -> LinAttnBackbone:
    cls, tiny, _ = BACKBONES[name]
    kwargs.setdefault('out_indices', (0, 1, 2, 3))
    return cls(**dict(tiny, **kwargs))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (zero-initialised offsets, scales and
    position tables included), so that every parameter matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model


def test_every_backbone_is_covered():
    registered = {
        name
        for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, LinAttnBackbone)
    }
    assert registered == set(NAMES)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [(64, 64), (75, 49)])
def test_nchw_outputs_for_any_size(name, size):
    model = build(name).eval()
    strides = BACKBONES[name][2]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert isinstance(outs, tuple) and len(outs) == 4
    for out, stride in zip(outs, strides):
        assert out.dim() == 4 and out.shape[0] == 2 and out.is_contiguous()
        assert torch.isfinite(out).all()
        for side, got in zip(size, out.shape[2:]):
            # within one cell of the coarsest grid involved (UFO-ViT's
            # adapters resample its stride-8 grid)
            assert abs(got - side / stride) <= max(1, 8 / stride), (name, size,
                                                                    out.shape)


@pytest.mark.parametrize('name', NAMES)
def test_stage_contract(name):
    """A stage maps (tokens, grid) to (tokens, grid) and owns its
    downsampling; the forward is stem -> stages -> outputs."""
    model = build(name).eval()
    assert all(isinstance(stage, Stage) for stage in model.stages)
    assert model.stages[0].downsample is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens, hw = model.embed(x)
        outs = []
        for i, stage in enumerate(model.stages):
            tokens, hw = stage(tokens, hw)
            assert tokens.dim() == 3 and len(hw) == 2
            outs.append(model.stage_output(i, tokens, hw))
        for ours, theirs in zip(outs, model(x)):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize('name', NAMES)
def test_only_needed_stages_run(name):
    model = build(name, out_indices=(1, ))
    model.stages[2].forward = None  # would raise if called
    with torch.no_grad():
        assert len(model(torch.randn(1, 3, 64, 64))) == 1


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('frozen_stages', [-1, 0, 2, 4])
def test_frozen_stages_mean_the_same_everywhere(name, frozen_stages):
    """-1: nothing; 0: the stem; k: the stem and stages 0..k-1 with their
    output modules (eval mode, no gradients)."""
    model = build(name, frozen_stages=frozen_stages)
    model.train()

    def params(part):
        return [part] if isinstance(part, nn.Parameter) else list(
            part.parameters())

    def modules(part):
        return [] if isinstance(part, nn.Parameter) else list(part.modules())

    for stage in range(-1, model.num_stages):
        frozen = stage < frozen_stages
        for part in model.stage_parts(stage):
            assert all(p.requires_grad != frozen for p in params(part))
            assert all(m.training != frozen for m in modules(part))
    assert model.stage_parts(-1)[0] is model.patch_embed
    covered = {
        id(p)
        for stage in range(-1, model.num_stages)
        for part in model.stage_parts(stage)
        for p in params(part)
    }
    assert covered == {id(p) for p in model.parameters()}


@pytest.mark.parametrize('name', NAMES)
def test_norm_eval_keeps_batchnorm_in_eval(name):
    model = build(name, norm_eval=True)
    assert model.train() is model
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert all(not m.training for m in norms)
    assert all(m.training for m in build(name).train().modules())


@pytest.mark.parametrize('name', NAMES)
def test_with_cp_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = randomise(build(name, drop_path_rate=0.)).train()
    cp = build(name, with_cp=True, drop_path_rate=0.).train()
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    results = []
    for model in (plain, cp):
        torch.manual_seed(1)
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        results.append(([o.detach() for o in outs], {
            n: p.grad
            for n, p in model.named_parameters() if p.grad is not None
        }))
    (outs_a, grads_a), (outs_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for key in grads_a:
        torch.testing.assert_close(
            grads_a[key], grads_b[key], rtol=1e-3, atol=1e-5, msg=key)


@pytest.mark.parametrize('name', NAMES)
def test_pretrained_init_cfg_with_prefix(name, tmp_path):
    source = randomise(build(name))
    path = str(tmp_path / 'classifier.pth')
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(3, 4)
    save_checkpoint({'state_dict': state}, path)
    model = build(
        name,
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_round_trip_is_strict(name):
    source = randomise(build(name)).eval()
    model = build(name).eval()
    model.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source(x), model(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('name', NAMES)
def test_bf16_autocast_training_step(name):
    torch.manual_seed(0)
    model = build(name).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(2, 3, 64, 48))
        loss = sum(o.float().square().mean() for o in outs)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(
        torch.isfinite(p.grad).all() for p in model.parameters()
        if p.grad is not None)


# Keys of files written before the stage contract: (new, old) patterns.
OLD_LAYOUT = {
    'SOFT': [(r'^patch_embed\.', 'stages.0.patch_embed.'),
             (r'^stages\.(\d)\.downsample\.', r'stages.\1.patch_embed.'),
             (r'^stages\.3\.(cls_token|cls_pos_embed)$', r'\1'),
             (r'^(stages\.3\.blocks\.\d+\.)mlp\.', r'\1ffn.')],
    'FLattenPVT':
    [(r'^patch_embed\.', 'stages.0.patch_embed.'),
     (r'^stages\.(\d)\.downsample\.', r'stages.\1.patch_embed.')],
    'FLattenCSWin':
    [(r'^patch_embed\.', 'stages.0.patch_embed.'),
     (r'^stages\.(\d)\.downsample\.', r'stages.\1.patch_embed.'),
     (r'^(stages\.\d\.blocks\.\d+\.)attn\.(qkv|proj)\.', r'\1\2.')],
    'LITv2': [(r'^stages\.(\d)\.blocks\.', r'layers.\1.blocks.'),
              (r'^stages\.(\d)\.downsample\.',
               lambda m: f'layers.{int(m.group(1)) - 1}.downsample.')],
    'UFOViT': [(r'^stages\.(\d)\.blocks\.0\.', r'blocks.\1.')],
}
OLD_LAYOUT['FLattenPVTv2'] = OLD_LAYOUT['FLattenPVT']


@pytest.mark.parametrize('name', sorted(OLD_LAYOUT))
def test_files_of_the_previous_layout_still_load(name):
    source = randomise(build(name)).eval()
    old = {}
    for key, value in source.state_dict().items():
        for pattern, replacement in OLD_LAYOUT[name]:
            key = re.sub(pattern, replacement, key)
        old[key] = value
    assert old.keys() != source.state_dict().keys()
    model = build(name).eval()
    model.load_state_dict(old, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source(x), model(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('name', NAMES)
def test_registered_under_plain_and_scoped_names(name):
    from mmengine.registry import MODELS as ROOT
    cls = BACKBONES[name][0]
    assert MODELS.get(name) is cls and MODELS.get(f'mmlinattn.{name}') is cls
    assert ROOT.get(name) is cls


def test_bad_input_names_the_fix():
    model = build('FLattenSwin')
    with pytest.raises(ValueError, match='in_channels = 3'):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='in_channels = 3'):
        model(torch.randn(3, 32, 32))


@pytest.mark.parametrize('name', NAMES)
def test_deprecated_pretrained_argument(name):
    assert build(name, pretrained=None).init_cfg is None
    with pytest.raises(TypeError):
        build(name, pretrained=123)
    with pytest.warns(DeprecationWarning):
        model = build(name, pretrained='x.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='x.pth')


@pytest.mark.parametrize('name', NAMES)
def test_layer_depth_for_layer_wise_lr_decay(name):
    """mmpretrain's convention: stem 0, blocks 1..n through the stages in
    order, everything after the blocks last."""
    model = build(name)
    num_blocks = sum(len(stage.blocks) for stage in model.stages)
    depths = {
        n: model.get_layer_depth('backbone.' + n, 'backbone.')
        for n, _ in model.named_parameters()
    }
    assert {total for _, total in depths.values()} == {num_blocks + 2}
    assert all(depths[n][0] == 0 for n in depths if n.startswith(
        'patch_embed'))
    block_ids = []
    for i, stage in enumerate(model.stages):
        for j in range(len(stage.blocks)):
            ids = {d for n, (d, _) in depths.items()
                   if n.startswith(f'stages.{i}.blocks.{j}.')}
            assert len(ids) == 1
            block_ids += ids
    assert block_ids == list(range(1, num_blocks + 1))
    assert model.get_layer_depth('head.fc.weight',
                                 'backbone.') == (num_blocks + 1,
                                                  num_blocks + 2)
    for n, (d, _) in depths.items():
        if n.startswith('norm'):
            assert d == num_blocks + 1, n
