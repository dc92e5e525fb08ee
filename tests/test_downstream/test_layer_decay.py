# Copyright (c) mmlinattn contributors. All rights reserved.
"""Layer-wise learning-rate decay with mmpretrain's real
LearningRateDecayOptimWrapperConstructor on an ImageClassifier of every
backbone."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmlinattn.registry import MODELS
from mmlinattn.testing import TINY_BACKBONES

pytest.importorskip('mmpretrain')


@pytest.mark.parametrize('name', sorted(TINY_BACKBONES))
def test_layer_wise_lr_decay_groups(name):
    from mmpretrain.engine.optimizers import \
        LearningRateDecayOptimWrapperConstructor
    from mmpretrain.models import ImageClassifier
    kwargs, _ = TINY_BACKBONES[name]
    with torch.no_grad():
        channels = MODELS.build(dict(type=name, **kwargs))(torch.zeros(
            1, 3, 64, 64))[-1].shape[1]
    classifier = ImageClassifier(
        backbone=dict(type=f'mmlinattn.{name}', **kwargs),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=channels))
    constructor = LearningRateDecayOptimWrapperConstructor(
        dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        paramwise_cfg=dict(layer_decay_rate=0.65, norm_decay_mult=0.))
    groups = constructor(classifier).optimizer.param_groups
    grouped = {id(p) for g in groups for p in g['params']}
    assert grouped == {id(p) for p in classifier.parameters()}
    by_name = {g['param_name']: g for g in groups}
    backbone = classifier.backbone
    num_layers = sum(len(s.blocks) for s in backbone.stages) + 2
    # lr rises monotonically from the stem to the head, 0.65 per layer
    lr_by_layer = {}
    for group in groups:
        lr_by_layer.setdefault(group['layer_id'], set()).add(group['lr'])
    assert sorted(lr_by_layer) == list(range(num_layers))
    lrs = [lr_by_layer[i].pop() for i in range(num_layers)]
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-3)
    assert lrs[0] == pytest.approx(1e-3 * 0.65**(num_layers - 1))
    assert by_name['head.fc.weight']['layer_id'] == num_layers - 1
    # norm_decay_mult still applies: no weight decay on any norm
    norms = {
        f'backbone.{module_name}.{param_name}'
        for module_name, module in backbone.named_modules()
        if isinstance(module, (torch.nn.LayerNorm, _BatchNorm))
        for param_name, _ in module.named_parameters(recurse=False)
    }
    assert norms and all(by_name[n]['weight_decay'] == 0 for n in norms)
    assert by_name['head.fc.weight']['weight_decay'] == 0.05


def test_fine_tune_config_builds_layer_decay_groups():
    """The example fine-tune config: its optimizer wrapper, built by
    mmengine from the config as a runner would, decays the learning rate
    from the head (full lr) to the stem (0.65**13)."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(
        osp.join(repo, 'configs', 'classification',
                 'plain_vit_small_focused-linear_ft-ld0.65_in1k.py'))
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg.model.backbone.update(
        arch=dict(embed_dims=32, depth=4, num_heads=2), init_cfg=None)
    cfg.model.head.in_channels = 32
    model = PRETRAIN_MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = wrapper.optimizer.param_groups
    lr = cfg.optim_wrapper.optimizer.lr
    scales = {g['layer_id']: g['lr'] / lr for g in groups}
    assert sorted(scales) == list(range(6))
    assert scales[5] == pytest.approx(1.0)
    assert scales[0] == pytest.approx(0.65**5)
    by_name = {g['param_name']: g for g in groups}
    assert by_name['backbone.stages.0.pos_embed']['weight_decay'] == 0
