# Copyright (c) mmlinattn contributors. All rights reserved.
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

import mmlinattn
from mmlinattn.registry import MODELS

TINY_SOFT = dict(
    type='SOFT',
    arch=dict(embed_dims=[32, 32, 64, 64], num_heads=[1, 1, 2, 2],
              depths=[1, 1, 1, 1]),
    pretrain_img_size=64,
    with_cls_token=False,
    out_indices=(0, 1, 2, 3))


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True)


def test_import_does_not_pull_in_toolboxes():
    proc = _run_python("""
        import sys, mmlinattn
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in
                        ('mmdet', 'mmseg', 'mmpretrain', 'mmcv', 'timm'))
        print(loaded)
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '[]'


def test_mismatched_mmengine_gives_clear_error():
    proc = _run_python("""
        import mmengine
        mmengine.__version__ = '0.7.0'
        import mmlinattn
        """)
    assert proc.returncode != 0
    assert 'needs mmengine>=' in proc.stderr
    assert 'mmengine==0.7.0' in proc.stderr
    assert 'pip install' in proc.stderr


def test_public_classes_in_both_registries():
    assert mmlinattn.__all__, 'nothing exported'
    public = [getattr(mmlinattn, n) for n in mmlinattn.models.__all__]
    assert public
    for cls in public:
        assert MODELS.get(cls.__name__) is cls
        assert ROOT_MODELS.get(cls.__name__) is cls


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg', 'mmpretrain'])
def test_no_name_collides_with_a_toolbox(toolbox):
    module = pytest.importorskip(toolbox)
    from mmengine.registry import Registry
    toolbox_models = __import__(f'{toolbox}.registry',
                                fromlist=['MODELS']).MODELS
    assert isinstance(toolbox_models, Registry)
    toolbox_models.import_from_location()
    ours = set(MODELS.module_dict)
    collisions = ours & set(toolbox_models.module_dict)
    assert not collisions, f'{module.__name__} shadows {collisions}'


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
@pytest.mark.parametrize('prefix', ['', 'mmlinattn.'])
def test_backbone_builds_from_toolbox_scope(scope, prefix):
    pytest.importorskip(scope)
    toolbox_models = __import__(f'{scope}.registry',
                                fromlist=['MODELS']).MODELS
    cfg = dict(TINY_SOFT, type=prefix + 'SOFT')
    with DefaultScope.overwrite_default_scope(scope):
        model = toolbox_models.build(cfg)
    assert type(model).__name__ == 'SOFT'
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 32, 64, 64]


def test_scoped_build_and_unknown_names():
    cfg = dict(TINY_SOFT, _scope_='mmlinattn')
    assert type(ROOT_MODELS.build(cfg)).__name__ == 'SOFT'
    with pytest.raises(KeyError, match=r"Did you mean 'SOFT'\?.*Valid "
                       r"names: \[.*'SOFT'"):
        MODELS.build(dict(TINY_SOFT, type='SOFTT'))
    assert 'SOFTT' not in MODELS and 'SOFT' in MODELS
    with pytest.raises(ValueError, match=r"Arch nano is not in default "
                       r"archs \['h', 'huge', 'l', 'large'"):
        MODELS.build(dict(type='SOFT', arch='nano'))


def test_external_mmdet_config_builds_and_steps(tmp_path):
    """A user's config outside the repo: inherit the mmdet RetinaNet config,
    add custom_imports, swap the backbone, run one loss step."""
    pytest.importorskip('mmdet')
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg_file = tmp_path / 'my_retinanet.py'
    cfg_file.write_text(textwrap.dedent("""
        _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['mmlinattn'],
                              allow_failed_imports=False)
        model = dict(
            backbone=dict(
                _delete_=True, type='SOFT',
                arch=dict(embed_dims=[32, 32, 64, 64],
                          num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1]),
                pretrain_img_size=64, with_cls_token=False,
                out_indices=(1, 2, 3)),
            neck=dict(in_channels=[32, 64, 64], out_channels=32,
                      start_level=0),
            bbox_head=dict(in_channels=32, feat_channels=32,
                           stacked_convs=1))
        """))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.default_scope == 'mmdet'
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as DET_MODELS
    detector = DET_MODELS.build(cfg.model)
    detector.init_weights()
    packed = demo_mm_inputs(2, [[3, 96, 96], [3, 80, 100]], num_classes=80)
    data = detector.data_preprocessor(packed, True)
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01)
    losses = detector.forward(**data, mode='loss')
    loss, _ = detector.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    grads = [p.grad for p in detector.backbone.parameters()
             if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
