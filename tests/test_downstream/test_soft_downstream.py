# Copyright (c) mmlinattn contributors. All rights reserved.
"""SOFT configs in mmpretrain, mmdet and mmseg: every config carries the
official / documented recipe, the full models have the README's parameter
counts, the classifier gives the official logits for official weights, and
shrunk copies of the real models run loss and predict."""
import glob
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL_ARCH = dict(
    embed_dims=[16, 32, 64, 64], num_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1])
ZOO_C3 = dict(tiny=320, small=320, medium=288, large=320, huge=352)


def config(folder: str, name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def configs_of(folder: str, pattern: str):
    return sorted(
        osp.basename(p)
        for p in glob.glob(osp.join(REPO, 'configs', folder, pattern)))


def build_meta(registry, cfg):
    with torch.device('meta'):
        return registry.build(cfg)


def count(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def official_reference():
    """The functional re-statement of the official model
    (tests/test_models/test_soft_official_parity.py)."""
    path = osp.join(REPO, 'tests', 'test_models',
                    'test_soft_official_parity.py')
    spec = importlib.util.spec_from_file_location('soft_official', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLS_CONFIGS = configs_of('classification', 'soft_*_in1k.py')
DET_CONFIGS = configs_of('detection', '*_soft_*_1x.py')
SEG_CONFIGS = configs_of('segmentation', 'upernet_soft_*.py')


def test_every_soft_config_is_tested():
    assert len(CLS_CONFIGS) == 10
    assert len(DET_CONFIGS) == 8
    assert len(SEG_CONFIGS) == 2


# ------------------------------------------------------------ classification
# name -> (arch, sym_norm, yaml lr per 1024 images, images per GPU)
CLS_RECIPES = {
    'soft_tiny_8xb128_in1k.py': ('tiny', False, 1e-3, 128),
    'soft_tiny_norm_8xb128_in1k.py': ('tiny', True, 1e-3, 128),
    'soft_small_8xb128_in1k.py': ('small', False, 1e-3, 128),
    'soft_small_norm_8xb128_in1k.py': ('small', True, 1e-3, 128),
    'soft_medium_32xb32_in1k.py': ('medium', False, 3.5e-4, 32),
    'soft_medium_norm_32xb32_in1k.py': ('medium', True, 4e-4, 32),
    'soft_large_32xb32_in1k.py': ('large', False, 3.3e-4, 32),
    'soft_large_norm_32xb32_in1k.py': ('large', True, 3.3e-4, 32),
    'soft_huge_32xb32_in1k.py': ('huge', False, 2.7e-4, 32),
    'soft_huge_norm_32xb32_in1k.py': ('huge', True, 2.7e-4, 32),
}


@pytest.mark.parametrize('name', CLS_CONFIGS)
def test_classification_recipe(name):
    pytest.importorskip('mmpretrain')
    arch, sym_norm, lr, batch = CLS_RECIPES[name]
    cfg = config('classification', name)
    assert cfg.default_scope == 'mmpretrain'
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.out_type) == (
        'mmlinattn.SOFT', arch, 'cls_token')
    assert backbone.get('sym_norm', False) == sym_norm
    assert backbone.drop_path_rate == 0.1
    assert cfg.model.neck is None and cfg.model.head.in_channels == 512
    assert cfg.model.get('init_cfg') is None  # keep the official init
    assert cfg.train_dataloader.batch_size == batch
    # main.py: lr = yaml lr x total batch / 1024; 8 x 128 or 32 x 32 = 1024
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == pytest.approx(lr)
    assert optim.optimizer.weight_decay == 0.05
    assert optim.clip_grad.max_norm == 1.0
    assert optim.paramwise_cfg.norm_decay_mult == 0.0
    assert optim.paramwise_cfg.bias_decay_mult == 0.0
    assert set(optim.paramwise_cfg.custom_keys) == {'.cls_token'}
    assert cfg.auto_scale_lr.base_batch_size == 1024
    warmup, cosine = cfg.param_scheduler
    assert warmup.end == 10 and lr * warmup.start_factor == pytest.approx(1e-6)
    assert (cosine.begin, cosine.end, cosine.eta_min) == (10, 300, 5e-5)
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.custom_hooks[0].type == 'EMAHook'
    assert cfg.custom_hooks[0].momentum == pytest.approx(1 - 0.99996)
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup',
                                                              'CutMix']
    assert cfg.model.head.loss.label_smooth_val == 0.1
    train_steps = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train_steps['RandAugment'].magnitude_level == 9
    assert train_steps['RandomErasing'].erase_prob == 0.25
    test_steps = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test_steps['ResizeEdge'].scale == 248  # crop_pct 0.9
    assert test_steps['ResizeEdge'].interpolation == 'bicubic'
    assert test_steps['CenterCrop'].crop_size == 224


def test_cls_token_has_no_weight_decay():
    pytest.importorskip('mmpretrain')
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = config('classification', 'soft_tiny_8xb128_in1k.py')
    cfg.model.backbone.arch = SMALL_ARCH
    cfg.model.head.in_channels = 64
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {
        id(p): g['weight_decay']
        for g in wrapper.optimizer.param_groups for p in g['params']
    }
    for name, param in model.named_parameters():
        # timm add_weight_decay: 1-D params, biases and cls_token undecayed;
        # position embeddings (cls_pos_embed included) decayed
        no_decay = param.ndim == 1 or name.endswith('cls_token')
        assert decay[id(param)] == (0.0 if no_decay else 0.05), name


def test_classifier_gives_official_logits():
    """Full SOFT-Tiny-Norm classifier from our config, official-layout
    weights through convert_soft_official, strict load: the logits of the
    official forward (functional re-statement) at 224."""
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmlinattn.models.backbones.soft import convert_soft_official
    init_default_scope('mmpretrain')
    reference = official_reference()
    cfg = config('classification', 'soft_tiny_norm_8xb128_in1k.py')
    cfg.model.backbone.kernel_impl = 'reference'
    model = MODELS.build(cfg.model).eval()
    assert round(count(model), 2) == 13.07
    official = reference.random_official_state_dict(
        'tiny', True, num_classes=1000)
    model.load_state_dict(convert_soft_official(official), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x, mode='tensor')
    expected = reference.official_soft_logits(
        official, x, [2, 4, 10, 16], norm=True, newton='b')
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_classifier_loss_and_predict():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    cfg = config('classification', 'soft_small_norm_8xb128_in1k.py')
    cfg.model.backbone.arch = SMALL_ARCH
    cfg.model.head.in_channels = 64
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
    assert model.backbone.stages[0].blocks[0].attn.q.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(
            **model.data_preprocessor(
                dict(inputs=inputs, data_samples=samples), False),
            mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


# ----------------------------------------------------------------- detection
# README: RetinaNet / Mask R-CNN parameters (M) with the Norm backbones
README_DET_PARAMS = {
    'retinanet': dict(tiny=23, small=34, medium=55, large=74),
    'mask_rcnn': dict(tiny=33, small=44, medium=65, large=84),
}


@pytest.mark.parametrize('name', DET_CONFIGS)
def test_detection_configs(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    assert cfg.default_scope == 'mmdet'
    detector, arch = name[:-len('_1x.py')].split('_soft_')
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('mmlinattn.SOFT', arch)
    assert backbone.sym_norm and backbone.newton_variant == 'b_per_matrix'
    assert backbone.max_landmarks == 256 and not backbone.with_cls_token
    assert backbone.norm_eval
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.prefix == 'backbone.'
    assert backbone.init_cfg.checkpoint == (
        f'checkpoints/soft_{arch}_norm_in1k_backbone.pth')
    c3 = ZOO_C3[arch]
    if detector == 'retinanet':
        assert tuple(backbone.out_indices) == (1, 2, 3)
        assert cfg.model.neck.in_channels == [128, c3, 512]
        assert cfg.model.neck.start_level == 0
    else:
        assert tuple(backbone.out_indices) == (0, 1, 2, 3)
        assert cfg.model.neck.in_channels == [64, 128, c3, 512]
    optim = cfg.optim_wrapper.optimizer
    assert (optim.type, optim.lr, optim.weight_decay) == ('AdamW', 1e-4,
                                                          1e-4)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    # the README's integers are within 0.55M of the models built here
    # (e.g. RetinaNet Medium 55.54M vs 55M, i.e. truncated, not rounded)
    model = build_meta(MODELS, cfg.model)
    assert abs(count(model) - README_DET_PARAMS[detector][arch]) < 0.55


def shrink_det(cfg) -> None:
    cfg.model.backbone.update(arch=SMALL_ARCH, init_cfg=None)
    dims = SMALL_ARCH['embed_dims']
    cfg.model.neck.in_channels = [
        dims[i] for i in cfg.model.backbone.out_indices
    ]


@pytest.mark.parametrize(
    'name', ['retinanet_soft_tiny_1x.py', 'mask_rcnn_soft_tiny_1x.py'])
def test_detector_loss_and_predict(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    shrink_det(cfg)
    model = MODELS.build(cfg.model)
    model.init_weights()
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]], with_mask='mask' in name)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.stages[1].blocks[0].attn.q.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(packed, False),
                      mode='predict')
    assert len(preds) == 2 and isinstance(preds[0], DetDataSample)
    assert 'bboxes' in preds[0].pred_instances


# -------------------------------------------------------------- segmentation
README_SEG_PARAMS = dict(small=54, medium=76)


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_segmentation_configs(name):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    assert cfg.default_scope == 'mmseg'
    arch = name.split('_')[2]
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('mmlinattn.SOFT', arch)
    assert backbone.sym_norm and not backbone.with_cls_token
    assert backbone.max_landmarks == 256
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert cfg.model.decode_head.in_channels == [64, 128, ZOO_C3[arch], 512]
    assert cfg.model.auxiliary_head.in_channels == ZOO_C3[arch]
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.data_root == (
        'data/ade/ADEChallengeData2016')
    model = build_meta(MODELS, cfg.model)
    assert abs(count(model) - README_SEG_PARAMS[arch]) < 0.55


def test_segmentor_loss_and_predict():
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = config('segmentation',
                 'upernet_soft_small_norm_8xb2-160k_ade20k-512x512.py')
    cfg.model.backbone.update(arch=SMALL_ARCH, init_cfg=None)
    bn = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    cfg.model.decode_head.update(
        in_channels=SMALL_ARCH['embed_dims'], channels=16, norm_cfg=bn)
    cfg.model.auxiliary_head.update(in_channels=64, channels=16, norm_cfg=bn)
    cfg.model.data_preprocessor.size = (64, 64)
    model = MODELS.build(cfg.model)
    model.init_weights()
    inputs, samples = [], []
    for h, w in ((64, 64), (61, 57)):
        inputs.append(torch.randint(0, 255, (3, h, w)).float())
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, h, w)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w),
                                 pad_shape=(64, 64)))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():  # the test preprocessor needs equal sizes
        preds = model(
            **model.data_preprocessor(
                dict(inputs=inputs[1:], data_samples=samples[1:]), False),
            mode='predict')
    assert len(preds) == 1
    assert preds[0].pred_sem_seg.data.shape == (1, 61, 57)
