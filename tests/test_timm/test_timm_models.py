# Copyright (c) mmlinattn contributors. All rights reserved.
"""timm models of every family (``mmlinattn.timm``): the generic checks timm
runs on its own models (tests/test_models.py of pytorch-image-models) on
tiny archs, every registered name on the meta device, our converted files
through ``pretrained_cfg_overlay``, and the lazy import."""
import glob
import json
import math
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

timm = pytest.importorskip('timm')
import mmlinattn.timm as mtimm  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# one name per backbone class, with a tiny arch (as create_model kwargs)
TINY = {
    'soft_tiny':
    dict(
        arch=dict(
            embed_dims=[16, 32, 32, 64],
            num_heads=[1, 1, 1, 2],
            depths=[1, 1, 1, 1])),
    'flatten_pvt_tiny':
    dict(
        arch=dict(
            embed_dims=[16, 32, 32, 64],
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 2],
            mlp_ratios=[2, 2, 2, 2])),
    'flatten_pvt_v2_b0':
    dict(
        arch=dict(
            embed_dims=[16, 32, 32, 64],
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 2],
            mlp_ratios=[2, 2, 2, 2])),
    'flatten_swin_tiny_patch4_224':
    dict(arch=dict(embed_dims=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2])),
    'flatten_cswin_tiny':
    dict(arch=dict(embed_dims=8, depths=[1, 1, 2, 1], num_heads=[2, 2, 2, 2])),
    'litv2_small':
    dict(arch=dict(embed_dims=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])),
    'ufo_vit_tiny':
    dict(arch=dict(embed_dims=32, depth=4, num_heads=2)),
    'plain_vit_tiny':
    dict(arch=dict(embed_dims=32, depth=4, num_heads=2)),
}
FFEAT_SIZE = 96  # timm's TARGET_FFEAT_SIZE


def create(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, **TINY[name], **kwargs)


def input_of(model: torch.nn.Module, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg['input_size'])


def test_every_backbone_class_is_tested():
    built = {
        mtimm._MODELS[name][0]['type']
        for name in mtimm.registered_models
    }
    assert built == {mtimm._MODELS[name][0]['type'] for name in TINY}


def test_every_name_builds_on_meta():
    """Full-size models, every registered name: builds, timm's cfg checks
    (classifier / first conv exist, 4 feature levels, num_features)."""
    assert len(mtimm.registered_models) == 41
    for name in mtimm.registered_models:
        with torch.device('meta'):
            model = timm.create_model(name)
        cfg = model.pretrained_cfg
        state_dict = model.state_dict()
        assert cfg['architecture'] == name
        assert cfg['first_conv'] + '.weight' in state_dict, name
        assert cfg['classifier'] + '.weight' in state_dict, name
        assert model.head.out_features == cfg['num_classes'] == 1000
        assert len(model.feature_info) == 4
        assert model.num_features == model.feature_info[-1]['num_chs']
        assert model.head.in_features == model.num_features
        assert cfg['mean'] == (0.485, 0.456, 0.406)
        assert cfg['interpolation'] == 'bicubic'
        is_384 = name.endswith('384')
        assert cfg['input_size'] == (3, 384, 384) if is_384 else (3, 224, 224)


def test_official_eval_settings():
    """Crop as each official evaluation: SOFT timm 0.3.2 (0.9, shorter
    side), FLatten squash to 256 x 256 + crop (384 models: Swin no crop,
    CSwin 438 + crop), LITv2 / UFO-ViT / PlainViT shorter side 256 + crop,
    LITv2-B-384 a direct 384 x 384 resize."""
    expected = dict(
        soft_tiny=(0.9, 'center'),
        soft_norm_small=(0.9, 'center'),
        flatten_pvt_tiny=(0.875, 'squash'),
        flatten_pvt_v2_b0=(0.875, 'squash'),
        flatten_swin_tiny_patch4_224=(0.875, 'squash'),
        flatten_swin_base_patch4_384=(1.0, 'squash'),
        flatten_cswin_base_384=(0.875, 'squash'),
        litv2_small=(0.875, 'center'),
        litv2_base_384=(1.0, 'squash'),
        ufo_vit_tiny=(0.875, 'center'),
        plain_vit_tiny=(0.875, 'center'))
    for name, (crop_pct, crop_mode) in expected.items():
        cfg = timm.models.get_pretrained_cfg(name)
        assert (cfg.crop_pct, cfg.crop_mode) == (crop_pct, crop_mode), name
    assert math.floor(384 / 0.875) == 438


def test_import_is_lazy_and_names_are_new():
    """``import mmlinattn`` leaves timm alone; ``import mmlinattn.timm``
    adds exactly our names, none of them timm's own."""
    code = '\n'.join([
        'import json, sys, warnings',
        'import mmlinattn',
        "lazy = 'timm' not in sys.modules",
        'import timm',
        'before = set(timm.list_models())',
        'with warnings.catch_warnings(record=True) as caught:',
        "    warnings.simplefilter('always')",
        '    import mmlinattn.timm',
        'print(json.dumps(dict(lazy=lazy, before=sorted(before),',
        '    added=sorted(set(timm.list_models()) - before),',
        '    warnings=[str(w.message) for w in caught])))',
    ])
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         check=True,
                         cwd=REPO)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['lazy']
    assert sorted(mtimm.registered_models) == result['added']
    assert not set(mtimm.registered_models) & set(result['before'])
    assert not [w for w in result['warnings'] if 'Overwriting' in w]


def test_no_other_module_imports_timm():
    pattern = re.compile(r'^\s*(import timm|from timm[ .])', re.M)
    offenders = [
        path for path in glob.glob(
            osp.join(REPO, 'mmlinattn', '**', '*.py'), recursive=True)
        if path != osp.join(REPO, 'mmlinattn', 'timm.py')
        and pattern.search(open(path, encoding='utf-8').read())
    ]
    assert offenders == []


@pytest.mark.parametrize('name', TINY)
def test_forward_backward(name):
    """timm's test_model_backward, at the default input size."""
    model = create(name, num_classes=42).train()
    out = model(input_of(model, batch=2))
    assert out.shape == (2, 42) and not out.isnan().any()
    out.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_grad_checkpointing():
    """set_grad_checkpointing switches with_cp of every block (the
    backbones test what with_cp does); gradients are unchanged."""
    for name in TINY:
        model = create(name)
        blocks = [m for m in model.modules() if hasattr(m, 'with_cp')]
        assert blocks and not any(m.with_cp for m in blocks)
        model.set_grad_checkpointing()
        assert all(m.with_cp for m in blocks), name
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        model = create('flatten_swin_tiny_patch4_224').train()
        model.set_grad_checkpointing(checkpointing)
        model(x).mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)


@pytest.mark.parametrize('name', TINY)
def test_default_cfg_checks(name):
    """timm's test_model_default_cfgs(_non_std): forward_features /
    forward_head(pre_logits) / reset_classifier shapes."""
    model = create(name).eval()
    cfg = model.pretrained_cfg
    x = input_of(model)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model(x)
        assert pre_logits.shape == (1, model.head_hidden_size)
        assert logits.shape == (1, 1000)
        if cfg['pool_size'] is None:  # class token, pooled by the backbone
            assert model.global_pool == 'token'
            assert features.shape == (1, model.num_features)
        else:
            assert model.global_pool == 'avg'
            assert features.shape == (1, model.num_features, *cfg['pool_size'])
        torch.testing.assert_close(model.forward_head(features), logits)
        # forward = forward_head(forward_features): the head checks on the
        # features
        model.reset_classifier(0)
        torch.testing.assert_close(model.forward_head(features), pre_logits)
        model.reset_classifier(0, '')
        torch.testing.assert_close(model.forward_head(features), features)
        model.reset_classifier(7, model.pool_type)
        assert model.forward_head(features).shape == (1, 7)
        assert model.get_classifier().out_features == 7
        no_head = create(name, num_classes=0, global_pool='').eval()
        torch.testing.assert_close(no_head.forward_head(features), features)
    with pytest.raises(ValueError, match='global_pool'):
        model.reset_classifier(0, 'max')


@pytest.mark.parametrize('name', TINY)
def test_features_only_and_intermediates(name):
    """features_only agrees with feature_info (timm's
    test_model_forward_features) and with forward_intermediates
    (test_model_forward_intermediates); pruning keeps no unused
    parameter."""
    model = create(name).eval()
    x = torch.randn(1, 3, FFEAT_SIZE, FFEAT_SIZE)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        normed = model.forward_intermediates(
            x, indices=1, norm=True, intermediates_only=True)
        nhwc = model.forward_intermediates(
            x, indices=[-1], output_fmt='NHWC', intermediates_only=True)
    channels = [info['num_chs'] for info in model.feature_info]
    reductions = [info['reduction'] for info in model.feature_info]
    assert len(inter) == 4
    for c, r, o in zip(channels, reductions, inter):
        assert o.shape[:2] == (1, c) and not o.isnan().any()
        for size in o.shape[2:]:
            assert math.ceil(FFEAT_SIZE / r) - 1 <= size <= math.ceil(
                FFEAT_SIZE / r) + 1
    torch.testing.assert_close(nhwc[0], inter[-1].permute(0, 2, 3, 1))
    norm3 = getattr(model.backbone, 'norm3', None)
    if norm3 is None:
        torch.testing.assert_close(normed[0], inter[-1])
    else:
        assert not torch.allclose(normed[0], inter[-1])

    for out_indices in ((0, 1, 2, 3), (1, -2)):
        features = create(
            name, features_only=True, out_indices=out_indices).eval()
        with torch.no_grad():
            outs = features(x)
        taken = [i % 4 for i in out_indices]
        assert features.feature_info.channels() == [channels[i] for i in taken]
        assert features.feature_info.reduction() == [
            reductions[i] for i in taken
        ]
        assert len(outs) == len(taken)
        for o, i in zip(outs, taken):
            torch.testing.assert_close(o, inter[i])
    features.train()
    sum(o.mean() for o in features(x)).backward()
    assert [n for n, p in features.named_parameters() if p.grad is None] == []


def _classifier(config: str, arch: dict, channels: int):
    """The mmpretrain ImageClassifier of ``configs/classification/config``
    with a tiny arch."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'classification', config))
    cfg.model.backbone.arch = arch
    cfg.model.head.in_channels = channels
    torch.manual_seed(1)
    return MODELS.build(cfg.model).eval()


def _convert_soft(state_dict):
    from mmlinattn.models.backbones.soft import (convert_soft_official,
                                                 convert_soft_to_official)
    return convert_soft_official(convert_soft_to_official(state_dict))


def _convert_flatten_swin(state_dict):
    from mmlinattn.models.backbones.flatten_swin import (
        convert_flatten_swin_official, flatten_swin_to_official)
    return convert_flatten_swin_official(flatten_swin_to_official(state_dict))


@pytest.mark.parametrize(
    'name, config, convert',
    [
        # neck None, SOFT's class token; through the official layout
        ('soft_tiny', 'soft_tiny_8xb128_in1k.py', _convert_soft),
        # GlobalAveragePooling after the final norm
        ('flatten_swin_tiny_patch4_224', 'flatten_swin_tiny_8xb128_in1k.py',
         _convert_flatten_swin),
    ])
def test_converted_file_gives_mmpretrain_logits(tmp_path, name, config,
                                                convert):
    """A converted file loads through pretrained_cfg_overlay (strict) and
    the timm logits equal the mmpretrain classifier's; another num_classes
    drops the head only."""
    pytest.importorskip('mmpretrain')
    from mmlinattn.utils.converter import save_converted
    probe = create(name)
    classifier = _classifier(config, TINY[name]['arch'], probe.num_features)
    path = str(tmp_path / 'converted.pth')
    save_converted(path, convert(classifier.state_dict()),
                   dict(mmlinattn=dict(source='test')))

    model = create(
        name, seed=2, pretrained=True,
        pretrained_cfg_overlay=dict(file=path)).eval()
    x = torch.randn(2, 3, FFEAT_SIZE, FFEAT_SIZE)
    with torch.no_grad():
        expected = classifier(x, mode='tensor')
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        pooled = classifier.neck(classifier.backbone(x))[-1] \
            if classifier.with_neck else classifier.backbone(x)[-1]
        other = create(
            name,
            seed=3,
            pretrained=True,
            num_classes=10,
            pretrained_cfg_overlay=dict(file=path)).eval()
        torch.testing.assert_close(
            other.forward_head(other.forward_features(x), pre_logits=True),
            pooled,
            rtol=1e-5,
            atol=1e-5)
        assert other(x).shape == (2, 10)
