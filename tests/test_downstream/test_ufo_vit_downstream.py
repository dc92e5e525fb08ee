# Copyright (c) mmlinattn contributors. All rights reserved.
"""UFO-ViT configs in mmpretrain, mmdet and mmseg: the real configs build at
full size (on the meta device) and shrunk copies of the real models run
loss and predict."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(embed_dims=32, depth=4, num_heads=2)


def config(folder: str, name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def configs_of(folder: str):
    """The paper configs (the demo's are tested with the demo)."""
    return sorted(
        osp.basename(p)
        for p in glob.glob(osp.join(REPO, 'configs', folder, '*ufo_vit*.py'))
        if not p.endswith('_demo_shapes.py'))


def shrink(backbone: dict) -> None:
    backbone.update(arch=TINY, img_size=64, init_cfg=None)


def full_size_backbone_outputs(backbone_cfg: dict, hw):
    """Build the config's backbone at full size on the meta device and
    return the output shapes for an hw image."""
    from mmlinattn.registry import MODELS
    cfg = dict(backbone_cfg, init_cfg=None)
    with torch.device('meta'):
        model = MODELS.build(cfg).eval()
        outs = model(torch.empty(1, 3, *hw))
    return model, [tuple(o.shape) for o in outs]


def test_all_expected_configs_exist():
    assert configs_of('classification') == [
        f'ufo_vit_{a}_8xb128_in1k.py'
        for a in ('base', 'medium', 'small', 'tiny')
    ]
    assert configs_of('detection') == [
        'mask_rcnn_ufo_vit_small_1x.py', 'retinanet_ufo_vit_small_1x.py'
    ]
    assert configs_of('segmentation') == [
        'upernet_ufo_vit_small_8xb2-160k_ade20k-512x512.py'
    ]


# ------------------------------------------------------------ classification
@pytest.mark.parametrize('name', configs_of('classification'))
def test_classification_configs_follow_the_deit_recipe(name):
    pytest.importorskip('mmpretrain')
    cfg = config('classification', name)
    assert cfg.default_scope == 'mmpretrain'
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.UFOViT'
    assert backbone.out_type == 'cls_token'
    assert name == f'ufo_vit_{backbone.arch}_8xb128_in1k.py'
    # DeiT: AdamW, lr 5e-4 per 512 images at batch 8 x 128, wd 0.05, 300
    # epochs, label smoothing 0.1, Mixup 0.8 / CutMix 1.0
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(5e-4 * 1024 / 512)
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert [a.alpha for a in cfg.model.train_cfg.augments] == [0.8, 1.0]
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['.gamma'].decay_mult == 0 and keys['.ls'].decay_mult == 0
    model, shapes = full_size_backbone_outputs(backbone, (224, 224))
    assert shapes == [(1, cfg.model.head.in_channels)]


def test_classifier_loss_and_predict():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    cfg = config('classification', 'ufo_vit_small_8xb128_in1k.py')
    shrink(cfg.model.backbone)
    cfg.model.head.in_channels = 32
    cfg.model.head.num_classes = 10
    cfg.model.data_preprocessor = dict(cfg.data_preprocessor, num_classes=10)
    model = MODELS.build(cfg.model)
    model.init_weights()
    inputs = torch.randint(0, 255, (2, 3, 64, 64)).float()
    samples = [DataSample().set_gt_label(i) for i in (1, 7)]
    data = model.data_preprocessor(
        dict(inputs=list(inputs), data_samples=samples), True)
    losses = model(**data, mode='loss')
    assert losses['loss'].isfinite() and losses['loss'] > 0
    losses['loss'].backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)
    model.eval()
    with torch.no_grad():
        preds = model(
            **model.data_preprocessor(
                dict(inputs=list(inputs), data_samples=samples), False),
            mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


# ----------------------------------------------------------------- detection
@pytest.mark.parametrize('name', configs_of('detection'))
def test_detection_config_matches_its_neck(name):
    pytest.importorskip('mmdet')
    cfg = config('detection', name)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.UFOViT'
    assert backbone.out_type == 'featmap'
    assert backbone.init_cfg.prefix == 'backbone.'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.train_cfg.max_epochs == 12
    _, shapes = full_size_backbone_outputs(backbone, (800, 1344))
    assert [s[1] for s in shapes] == list(cfg.model.neck.in_channels)
    strides = [800 // s[2] for s in shapes]
    assert strides == [(4, 8, 16, 32)[i] for i in backbone.out_indices]


@pytest.mark.parametrize('name', configs_of('detection'))
def test_detector_loss_and_predict(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    shrink(cfg.model.backbone)
    cfg.model.neck.in_channels = [32] * len(cfg.model.backbone.out_indices)
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    with_mask = 'mask' in name
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]], with_mask=with_mask)
    data = detector.data_preprocessor(packed, True)
    losses = detector(**data, mode='loss')
    assert isinstance(losses, dict) and losses
    total = sum(
        v if isinstance(v, torch.Tensor) else sum(v)
        for k, v in losses.items() if 'loss' in k)
    assert total.isfinite()
    total.backward()
    assert all(p.grad is not None
               for p in detector.backbone.parameters()), \
        'every backbone parameter must get a gradient (DDP)'
    detector.eval()
    with torch.no_grad():
        data = detector.data_preprocessor(packed, False)
        preds = detector(**data, mode='predict')
    assert len(preds) == 2 and isinstance(preds[0], DetDataSample)
    assert 'bboxes' in preds[0].pred_instances
    if with_mask:
        assert 'masks' in preds[0].pred_instances


# -------------------------------------------------------------- segmentation
@pytest.mark.parametrize('name', configs_of('segmentation'))
def test_segmentation_config_matches_its_heads(name):
    pytest.importorskip('mmseg')
    cfg = config('segmentation', name)
    assert cfg.default_scope == 'mmseg'
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.UFOViT'
    _, shapes = full_size_backbone_outputs(backbone, (512, 512))
    assert [s[1] for s in shapes] == list(cfg.model.decode_head.in_channels)
    assert [512 // s[2] for s in shapes] == [4, 8, 16, 32]
    aux = cfg.model.auxiliary_head
    assert shapes[aux.in_index][1] == aux.in_channels


@pytest.mark.parametrize('name', configs_of('segmentation'))
def test_segmentor_loss_and_predict(name):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    shrink(cfg.model.backbone)
    bn = dict(type='BN', requires_grad=True)  # SyncBN needs a process group
    cfg.model.decode_head.update(
        in_channels=[32] * 4, channels=16, num_classes=5, norm_cfg=bn)
    cfg.model.auxiliary_head.update(
        in_channels=32, channels=16, num_classes=5, norm_cfg=bn)
    cfg.model.data_preprocessor.size = (64, 64)
    segmentor = MODELS.build(cfg.model)
    segmentor.init_weights()
    samples = []
    for h, w in [(64, 64), (61, 57)]:
        sample = SegDataSample(
            gt_sem_seg=PixelData(data=torch.randint(0, 5, (1, h, w))))
        sample.set_metainfo(
            dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(64, 64)))
        samples.append(sample)
    packed = dict(
        inputs=[
            torch.randint(0, 255, (3, 64, 64)),
            torch.randint(0, 255, (3, 61, 57))
        ],
        data_samples=samples)
    data = segmentor.data_preprocessor(packed, True)
    losses = segmentor(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert total.isfinite()
    total.backward()
    assert all(p.grad is not None for p in segmentor.backbone.parameters())
    segmentor.eval()
    odd = dict(inputs=packed['inputs'][1:], data_samples=samples[1:])
    with torch.no_grad():
        preds = segmentor(
            **segmentor.data_preprocessor(odd, False), mode='predict')
    assert len(preds) == 1
    assert preds[0].pred_sem_seg.data.shape == (1, 61, 57)
    assert preds[0].seg_logits.data.shape == (5, 61, 57)
