# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/model_converters/flatten2mmlinattn.py on official-layout PVT /
PVTv2 checkpoints."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmlinattn.models.backbones.flatten_pvt import (FLattenPVT, FLattenPVTv2,
                                                    flatten_pvt_to_official)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def cli():
    path = osp.join(REPO, 'tools', 'model_converters', 'flatten2mmlinattn.py')
    spec = importlib.util.spec_from_file_location('flatten2mmlinattn', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_checkpoint(model, num_classes=1000, seed=0):
    """An official-layout classifier state dict with random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        f'backbone.{k}': torch.randn(v.shape, generator=gen)
        for k, v in model.state_dict().items()
    }
    dims = model.embed_dims[-1]
    state['head.fc.weight'] = torch.randn(num_classes, dims, generator=gen)
    state['head.fc.bias'] = torch.randn(num_classes, generator=gen)
    return flatten_pvt_to_official(state), state


@pytest.fixture(scope='module')
def b0_checkpoint():
    return official_checkpoint(FLattenPVTv2('b0'))


@pytest.mark.parametrize('to', ['cls', 'det'])
def test_cli_end_to_end_pvtv2_b0(cli, b0_checkpoint, tmp_path, to):
    official, ours = b0_checkpoint
    src, dst = tmp_path / 'flatten_pvt_v2_b0.pth', tmp_path / 'out.pth'
    ddp = {f'module.{k}': v for k, v in official.items()}
    torch.save({'model': ddp, 'epoch': 299, 'max_accuracy': 71.1}, src)
    cli.main([str(src), str(dst), '--to', to])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['family'] == 'pvtv2'
    assert saved['meta']['arch'] == 'b0'
    assert saved['meta']['weights'] == 'model'
    assert len(saved['meta']['source_sha256']) == 64
    state = saved['state_dict']
    expected = {
        k: v
        for k, v in ours.items() if to == 'cls' or k.startswith('backbone.')
    }
    assert state.keys() == expected.keys()
    for key in expected:
        assert torch.equal(state[key], expected[key]), key
    model = FLattenPVTv2(
        'b0',
        init_cfg=dict(
            type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[f'backbone.{key}']), key


def test_convert_pvt_tiny_detects_family_and_arch(cli):
    official, ours = official_checkpoint(FLattenPVT('tiny'), seed=1)
    assert 'norm.weight' in official and 'pos_embed1' in official
    converted, meta = cli.convert({'model': official})
    assert (meta['family'], meta['arch']) == ('pvt', 'tiny')
    assert converted.keys() == ours.keys()


def test_ema_selection_and_errors(cli, b0_checkpoint):
    official, _ = b0_checkpoint
    ema = {k: v + 1 for k, v in official.items()}
    checkpoint = {'model': official, 'state_dict_ema': ema}
    converted, meta = cli.convert(checkpoint, weights='ema', to='det')
    key = 'backbone.patch_embed.proj.weight'
    assert meta['weights'] == 'ema'
    assert torch.equal(converted[key], ema['patch_embed1.proj.weight'])
    with pytest.raises(KeyError, match='--weights ema'):
        cli.convert({'model': official}, weights='ema')

    broken = dict(official)
    del broken['block2.1.attn.dwc.weight']
    with pytest.raises(
            RuntimeError, match='missing stages.1.blocks.1.attn.dwc.weight'):
        cli.convert({'model': broken})

    wrong_grid = dict(official)
    wrong_grid['block1.0.attn.positional_encoding'] = torch.zeros(1, 100, 32)
    with pytest.raises(
            RuntimeError,
            match=r'shape stages\.0\.blocks\.0\.attn'
            r'\.positional_encoding: checkpoint \(1, 100, 32\)'):
        cli.convert({'model': wrong_grid})

    with pytest.raises(ValueError, match='pass --family'):
        cli.convert({'model': {'foo.weight': torch.zeros(1)}})
    with pytest.raises(ValueError, match='not in default archs'):
        cli.convert({'model': official}, arch='b9')
