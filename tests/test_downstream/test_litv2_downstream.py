# Copyright (c) mmlinattn contributors. All rights reserved.
"""LITv2 configs in mmpretrain, mmdet and mmseg: every config builds with
the paper's recipe, and shrunk copies of the real models run loss and
predict."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])
TINY_DIMS = [16, 32, 64, 128]
ARCH = {'small': (96, 0.2), 'medium': (96, 0.2), 'base': (128, 0.3)}


def config(folder: str, name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def configs_of(folder: str, pattern: str = '*litv2*.py'):
    """The paper configs (the demo's are tested with the demo)."""
    return sorted(
        osp.basename(p)
        for p in glob.glob(osp.join(REPO, 'configs', folder, pattern))
        if not p.endswith('_demo_shapes.py'))


def shrink(backbone) -> None:
    backbone.update(arch=TINY, init_cfg=None)


def build_meta(registry, cfg):
    with torch.device('meta'):
        return registry.build(cfg)


def count(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_every_litv2_config_is_tested():
    found = {
        folder: configs_of(folder)
        for folder in ('classification', 'detection', 'segmentation')
    }
    assert len(found['classification']) == 4
    assert len(found['detection']) == 12
    assert len(found['segmentation']) == 4


# ------------------------------------------------------------ classification
@pytest.mark.parametrize('name, arch, drop_path, channels',
                         [('litv2_small_8xb128_in1k.py', 'small', 0.2, 768),
                          ('litv2_medium_8xb128_in1k.py', 'medium', 0.3, 768),
                          ('litv2_base_8xb128_in1k.py', 'base', 0.5, 1024)])
def test_classification_recipe(name, arch, drop_path, channels):
    pytest.importorskip('mmpretrain')
    cfg = config('classification', name)
    assert cfg.default_scope == 'mmpretrain'
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.alpha) == (
        'mmlinattn.LITv2', arch, 0.9)
    assert backbone.drop_path_rate == drop_path
    assert tuple(backbone.local_ws) == (0, 0, 2, 1)
    assert cfg.model.head.in_channels == channels
    assert cfg.train_dataloader.batch_size == 128
    # 5e-4 per 512 images, linearly scaled to 8 x 128 (official main.py)
    optim = cfg.optim_wrapper
    assert optim.optimizer.lr == pytest.approx(1e-3)
    assert optim.optimizer.weight_decay == 0.05
    assert optim.clip_grad.max_norm == 5.0
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.param_scheduler[0].end == 20
    assert cfg.param_scheduler[0].start_factor == pytest.approx(1e-3)
    assert cfg.param_scheduler[1].eta_min == pytest.approx(1e-5)
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert set(optim.paramwise_cfg.custom_keys) == {'.conv_offset.weight'}


def test_finetune_384_recipe():
    pytest.importorskip('mmpretrain')
    cfg = config('classification', 'litv2_base_8xb128_in1k-384px.py')
    assert cfg.model.backbone.arch == 'base'
    assert cfg.load_from == 'checkpoints/litv2_base_in1k.pth'
    assert cfg.train_cfg.max_epochs == 30
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(4e-5)
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-8
    assert cfg.param_scheduler[0].end == 5
    assert cfg.param_scheduler[1].eta_min == pytest.approx(4e-7)
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert (crop.type, crop.scale) == ('RandomResizedCrop', 384)
    # TEST.CROP False: resize to 384x384, no centre crop
    test_steps = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert 'CenterCrop' not in test_steps
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (384, 384)


def test_offset_lr_multiplier_hits_only_offset_weights():
    """The 0.01x lr of the official optimizer: conv_offset weights only; the
    1-D conv_offset biases have base lr and no weight decay."""
    pytest.importorskip('mmpretrain')
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = config('classification', 'litv2_small_8xb128_in1k.py')
    shrink(cfg.model.backbone)
    cfg.model.head.in_channels = TINY_DIMS[-1]
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr, base_wd = 1e-3, 0.05
    groups = {
        id(p): g
        for g in wrapper.optimizer.param_groups for p in g['params']
    }
    seen = 0
    for name, param in model.named_parameters():
        group = groups[id(param)]
        if name.endswith('conv_offset.weight'):
            seen += 1
            assert group['lr'] == pytest.approx(0.01 * base_lr), name
            assert group['weight_decay'] == base_wd, name
        elif name.endswith('conv_offset.bias') or param.ndim == 1:
            assert group['lr'] == pytest.approx(base_lr), name
            assert group['weight_decay'] == 0, name
        else:
            assert group['lr'] == pytest.approx(base_lr), name
            assert group['weight_decay'] == base_wd, name
    assert seen == 3


def test_classifier_loss_predict_and_official_weights():
    """A shrunk classifier trains one step; the full LITv2-S classifier
    built from the config loads official-layout weights strictly and gives
    the logits of the model they came from."""
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    from mmlinattn.models.backbones.litv2 import (convert_litv2_official,
                                                  to_official)
    init_default_scope('mmpretrain')
    cfg = config('classification', 'litv2_small_8xb128_in1k.py')
    full = MODELS.build(cfg.model).eval()
    full.init_weights()
    restored = MODELS.build(cfg.model).eval()
    official = to_official(full.state_dict())
    assert len(official) == 219 and 'head.weight' in official
    restored.load_state_dict(convert_litv2_official(official), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            restored(x, mode='tensor'), full(x, mode='tensor'), rtol=0,
            atol=0)

    shrink(cfg.model.backbone)
    cfg.model.head.in_channels = TINY_DIMS[-1]
    cfg.model.head.num_classes = 10
    cfg.model.data_preprocessor = dict(cfg.data_preprocessor, num_classes=10)
    model = MODELS.build(cfg.model)
    model.init_weights()
    inputs = list(torch.randint(0, 255, (2, 3, 64, 64)).float())
    samples = [DataSample().set_gt_label(i) for i in (1, 7)]
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)
    losses = model(**data, mode='loss')
    assert losses['loss'].isfinite() and losses['loss'] > 0
    losses['loss'].backward()
    model.eval()
    with torch.no_grad():
        preds = model(
            **model.data_preprocessor(
                dict(inputs=inputs, data_samples=samples), False),
            mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


# ----------------------------------------------------------------- detection
@pytest.mark.parametrize('name', configs_of('detection'))
def test_detection_configs(name):
    """Paper recipe (AdamW, not the base SGD), the ws4 variants differ only
    in the window, RetinaNet FPN sees stages 1-3, and the detector built on
    the meta device has the paper's parameter count."""
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    arch = name.split('_litv2_')[1].split('_')[0]
    dims, drop_path = ARCH[arch]
    assert (backbone.type, backbone.arch, backbone.alpha) == (
        'mmlinattn.LITv2', arch, 0.9)
    assert backbone.drop_path_rate == drop_path
    assert backbone.with_cp == (arch == 'base')
    ws = 4 if name.endswith('_ws4.py') else 2
    assert tuple(backbone.local_ws) == (0, 0, ws, 1)
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f'checkpoints/litv2_{arch}_in1k_backbone.pth',
        prefix='backbone.')
    optimizer = cfg.optim_wrapper.optimizer
    retina = name.startswith('retinanet')
    assert optimizer.type == 'AdamW' and 'momentum' not in optimizer
    assert optimizer.lr == (1e-4 if retina else 2e-4)
    assert optimizer.weight_decay == 1e-4
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {
        'norm': dict(decay_mult=0.)
    }
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.train_dataloader.batch_size == 2
    channels = [dims * 2**i for i in range(4)]
    if retina:
        assert tuple(backbone.out_indices) == (1, 2, 3)
        assert cfg.model.neck.in_channels == channels[1:]
        assert cfg.model.neck.start_level == 0
        assert cfg.model.neck.add_extra_convs == 'on_input'
    else:
        assert tuple(backbone.out_indices) == (0, 1, 2, 3)
        assert backbone.with_stage0_norm is False
        assert cfg.model.neck.in_channels == channels
    backbone.init_cfg = None
    model = build_meta(MODELS, cfg.model)
    paper = {
        ('retinanet', 'small'): 38, ('retinanet', 'medium'): 59,
        ('retinanet', 'base'): 97, ('mask', 'small'): 47,
        ('mask', 'medium'): 68, ('mask', 'base'): 106
    }[(name.split('_')[0], arch)]
    assert round(count(model)) == paper


@pytest.mark.parametrize(
    'name', ['retinanet_litv2_small_1x.py', 'mask_rcnn_litv2_small_1x.py'])
def test_detector_loss_and_predict(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    shrink(cfg.model.backbone)
    cfg.model.backbone.local_ws = (0, 0, 4, 1)  # pads stage 3 (8x8 -> 32 px)
    indices = cfg.model.backbone.out_indices
    cfg.model.neck.in_channels = [TINY_DIMS[i] for i in indices]
    model = MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]],
        with_mask=name.startswith('mask'))
    data = model.data_preprocessor(packed, True)
    total, _ = model.parse_losses(model.forward(**data, mode='loss'))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        preds = model.forward(**data, mode='predict')
        feats = model.forward(**data, mode='tensor')
    assert len(preds) == 2 and isinstance(preds[0], DetDataSample)
    assert isinstance(feats, tuple)


# -------------------------------------------------------------- segmentation
@pytest.mark.parametrize('name', configs_of('segmentation'))
def test_segmentation_configs(name):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    assert cfg.default_scope == 'mmseg'
    backbone = cfg.model.backbone
    arch = name.split('_litv2_')[1].split('_')[0]
    dims = ARCH[arch][0]
    assert (backbone.type, backbone.arch, backbone.alpha) == (
        'mmlinattn.LITv2', arch, 0.9)
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.with_stage0_norm is True  # segmentation: norm0..3
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.train_dataloader.batch_size == 2
    channels = [dims * 2**i for i in range(4)]
    optimizer = cfg.optim_wrapper.optimizer
    if name.startswith('fpn'):
        assert backbone.drop_path_rate == ARCH[arch][1]
        assert cfg.model.neck.in_channels == channels
        assert cfg.model.neck.num_outs == 4
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
            'AdamW', 1e-4, 1e-4)
        poly = cfg.param_scheduler[0]
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR',
                                                                   0.9, 1e-6,
                                                                   80000)
        assert cfg.train_cfg.max_iters == 80000
        paper = {'small': 31, 'medium': 52, 'base': 90}[arch]
    else:
        assert cfg.model.decode_head.in_channels == channels
        assert cfg.train_cfg.max_iters == 160000
        paper = None
    backbone.init_cfg = None
    model = build_meta(MODELS, cfg.model)
    if paper is not None:
        assert round(count(model)) == paper


@pytest.mark.parametrize('name', [
    'fpn_litv2_small_8xb2-80k_ade20k-512x512.py',
    'upernet_litv2_small_8xb2-160k_ade20k-512x512.py'
])
def test_segmentor_loss_and_predict(name):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    shrink(cfg.model.backbone)
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = TINY_DIMS
    else:
        cfg.model.decode_head.in_channels = TINY_DIMS
        cfg.model.decode_head.channels = 32
        cfg.model.auxiliary_head.in_channels = TINY_DIMS[2]
        cfg.model.auxiliary_head.channels = 16
    # Single-process CPU test: plain BatchNorm instead of SyncBN.
    for head in ('decode_head', 'auxiliary_head'):
        if head in cfg.model:
            cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.data_preprocessor.size = (64, 64)
    model = MODELS.build(cfg.model)
    model.init_weights()
    inputs, samples = [], []
    for h, w in ((64, 64), (61, 57)):
        inputs.append(torch.randint(0, 255, (3, h, w)).float())
        sample = SegDataSample(metainfo=dict(img_shape=(h, w),
                                             ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, h, w)))
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)
    total, _ = model.parse_losses(model.forward(**data, mode='loss'))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():  # whole-image inference at an odd size
        data = model.data_preprocessor(
            dict(inputs=inputs[1:], data_samples=samples[1:]), False)
        preds = model.forward(**data, mode='predict')
    assert preds[0].pred_sem_seg.shape == (61, 57)
