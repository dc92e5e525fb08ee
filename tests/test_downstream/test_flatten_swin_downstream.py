# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLatten-Swin / FLatten-CSwin configs in mmpretrain, mmdet and mmseg: the
classification configs carry the official recipes, and shrunk copies of
the real detectors / segmentors / classifiers run loss and predict."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4])
TINY_DIMS = [16, 32, 64, 128]


def config(folder, name):
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def shrink(backbone, **kwargs):
    backbone.update({
        'arch': TINY,
        'pretrain_img_size': 64,
        'init_cfg': None,
        **kwargs
    })
    if backbone.type.endswith('FLattenCSWin'):
        backbone.update(split_size=[1, 2, 2, 2])


def configs_of(folder, pattern):
    return sorted(
        osp.basename(p)
        for p in glob.glob(osp.join(REPO, 'configs', folder, pattern)))


# ------------------------------------------------------------ classification
# spec/flatten.md section 6 (official yaml + config.py, 8 GPUs):
# batch per GPU, lr, warm-up epochs and LR, min LR, epochs incl. cool-down,
# weight decay, grad clip, drop path, EMA decay
RECIPES = {
    'flatten_swin_tiny_8xb128_in1k.py':
    (128, 1e-3, 20, 1e-6, 1e-5, 300, 0.05, 5.0, 0.2, None),
    'flatten_swin_small_8xb128_in1k.py':
    (128, 1e-3, 20, 1e-6, 1e-5, 300, 0.05, 5.0, 0.3, None),
    'flatten_swin_base_8xb64_in1k.py':
    (64, 5e-4, 20, 5e-7, 5e-6, 300, 0.05, 5.0, 0.5, None),
    'flatten_swin_base_8xb32_in1k-384px.py':
    (32, 1e-5, 5, 1e-8, 1e-7, 30, 1e-8, 5.0, 0.5, None),
    'flatten_cswin_tiny_8xb256_in1k.py': (256, 2e-3, 20, 4e-6, 4e-5, 310, 0.05,
                                          None, 0.2, 0.99984),
    'flatten_cswin_small_8xb128_in1k.py': (128, 1e-3, 20, 2e-6, 2e-5, 310,
                                           0.05, None, 0.4, 0.99984),
    'flatten_cswin_base_8xb64_in1k.py': (64, 5e-4, 20, 1e-6, 1e-5, 310, 0.1,
                                         None, 0.5, 0.99982),
    'flatten_cswin_base_8xb32_in1k-384px.py': (32, 2.5e-6, 0, None, 2.5e-7, 30,
                                               1e-8, None, 0.7, 0.99982),
}
CLS_CONFIGS = configs_of('classification', 'flatten_*swin_*.py')


def test_every_variant_has_a_classification_config():
    assert CLS_CONFIGS == sorted(RECIPES)


@pytest.mark.parametrize('name', CLS_CONFIGS)
def test_classification_configs_follow_the_official_recipe(name):
    pytest.importorskip('mmpretrain')
    (batch, lr, warmup, warmup_lr, min_lr, epochs, wd, clip, drop_path,
     ema) = RECIPES[name]
    cfg = config('classification', name)
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmlinattn' in cfg.custom_imports.imports
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.auto_scale_lr.base_batch_size == 8 * batch
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert optimizer.lr == pytest.approx(lr)
    assert optimizer.weight_decay == pytest.approx(wd)
    clip_cfg = cfg.optim_wrapper.get('clip_grad')
    assert (clip_cfg['max_norm'] if clip_cfg else None) == clip
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert paramwise.norm_decay_mult == paramwise.bias_decay_mult == 0
    assert paramwise.flat_decay_mult == 0
    assert not any('positional_encoding' in k or 'scale' in k
                   for k in paramwise.get('custom_keys', {}))
    schedulers = {s.type: s for s in cfg.param_scheduler}
    if warmup:
        assert schedulers['LinearLR'].end == warmup
        assert schedulers['LinearLR'].start_factor * lr == pytest.approx(
            warmup_lr)
    else:
        assert 'LinearLR' not in schedulers
    cosine = schedulers['CosineAnnealingLR']
    assert cosine.begin == warmup
    assert cosine.eta_min_ratio * lr == pytest.approx(min_lr)
    assert cfg.train_cfg.max_epochs == epochs
    assert cosine.end == (epochs - 10 if ema else epochs)  # cool-down
    assert cfg.model.backbone.drop_path_rate == drop_path
    hooks = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
    if ema:
        assert hooks[0].momentum == pytest.approx(1 - ema)
    else:
        assert not hooks
    from mmlinattn.registry import MODELS
    with torch.device('meta'):
        backbone = MODELS.build(cfg.model.backbone)
    assert backbone.embed_dims[-1] == cfg.model.head.in_channels
    size = 384 if '384' in name else 224
    assert backbone.pretrain_img_size == size
    assert cfg.test_dataloader.dataset.pipeline[-2].get('crop_size',
                                                        size) == size


@pytest.mark.parametrize('name,resize,crop', [
    ('flatten_swin_tiny_8xb128_in1k.py', 256, 224),
    ('flatten_swin_base_8xb32_in1k-384px.py', 384, None),
    ('flatten_cswin_base_8xb32_in1k-384px.py', 438, 384),
])
def test_eval_transform_squashes_then_crops(tmp_path, name, resize, crop):
    pytest.importorskip('mmpretrain')
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from PIL import Image
    init_default_scope('mmpretrain')
    cfg = config('classification', name)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 420, 3), np.uint8))
    image.save(tmp_path / 'img.png')
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    out = pipeline(dict(img_path=str(tmp_path / 'img.png')))
    got = out['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]  # BGR -> RGB
    expected = np.asarray(image.resize((resize, resize), Image.BICUBIC))
    if crop:
        start = (resize - crop) // 2
        expected = expected[start:start + crop, start:start + crop]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    'name',
    ['flatten_swin_tiny_8xb128_in1k.py', 'flatten_cswin_tiny_8xb256_in1k.py'])
def test_classifier_loss_and_predict(name):
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    cfg = config('classification', name)
    shrink(cfg.model.backbone)
    cfg.model.head.in_channels = TINY_DIMS[-1]
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
    model.eval()
    with torch.no_grad():
        preds = model(
            **model.data_preprocessor(
                dict(inputs=list(inputs), data_samples=samples), False),
            mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


def test_384_finetune_loads_the_224_classifier(tmp_path):
    """The -384px configs start from the converted 224 classifier: the
    Pretrained init resizes positional_encoding and relative-bias tables."""
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmengine.runner import save_checkpoint
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = config('classification', 'flatten_swin_base_8xb32_in1k-384px.py')
    small_cfg = config('classification', 'flatten_swin_base_8xb64_in1k.py')
    for c, size, window in ((small_cfg, 64, 2), (cfg, 96, 3)):
        shrink(c.model.backbone, pretrain_img_size=size, window_size=window)
        c.model.head.in_channels = TINY_DIMS[-1]
    source = MODELS.build(small_cfg.model)
    path = str(tmp_path / 'cls224.pth')
    save_checkpoint({'state_dict': source.state_dict()}, path)
    cfg.model.init_cfg.checkpoint = path
    model = MODELS.build(cfg.model)
    with pytest.warns(UserWarning, match='resized'):
        model.init_weights()
    attn = model.backbone.stages[0].blocks[0].attn
    assert attn.positional_encoding.shape[1] == 24 * 24
    torch.testing.assert_close(model.head.fc.weight, source.head.fc.weight)


# ----------------------------------------------------------------- detection
DET_CONFIGS = configs_of('detection', '*flatten_swin*.py')


def test_detection_configs_are_the_paper_rows():
    assert DET_CONFIGS == [
        'cascade_mask_rcnn_flatten_swin_small_3x.py',
        'cascade_mask_rcnn_flatten_swin_tiny_3x.py',
        'mask_rcnn_flatten_swin_tiny_1x.py',
        'mask_rcnn_flatten_swin_tiny_3x.py'
    ]


@pytest.mark.parametrize('name', DET_CONFIGS)
def test_detection_configs(name):
    pytest.importorskip('mmdet')
    cfg = config('detection', name)
    assert cfg.default_scope == 'mmdet'
    assert 'mmlinattn' in cfg.custom_imports.imports
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.FLattenSwin'
    assert backbone.attn_type == 'LLSS' and backbone.arch in name
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.prefix == 'backbone.'
    assert backbone.init_cfg.checkpoint.endswith(
        f'flatten_swin_{backbone.arch}_in1k.pth')
    epochs = 36 if name.endswith('3x.py') else 12
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.param_scheduler[1].milestones == ([27, 33]
                                                 if epochs == 36 else [8, 11])
    if epochs == 36:  # multi-scale 480-800 + DETR-style crop
        assert cfg.train_pipeline[3].type == 'RandomChoice'
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr,
            optimizer.weight_decay) == ('AdamW', 1e-4, 0.05)
    no_decay = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert no_decay.norm.decay_mult == 0
    assert no_decay.relative_position_bias_table.decay_mult == 0
    if 'cascade' in name:
        heads = cfg.model.roi_head.bbox_head
        assert all(h.num_shared_convs == 4 and h.loss_bbox.type == 'GIoULoss'
                   for h in heads)
    from mmlinattn.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(backbone)
    assert model.out_indices == (0, 1, 2, 3)
    assert list(cfg.model.neck.in_channels) == model.embed_dims


@pytest.mark.parametrize('name', [
    'mask_rcnn_flatten_swin_tiny_1x.py',
    'cascade_mask_rcnn_flatten_swin_tiny_3x.py'
])  # the other configs build the same detectors once the backbone shrinks
def test_detector_loss_and_predict(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    shrink(cfg.model.backbone)
    cfg.model.neck.in_channels = TINY_DIMS
    # fewer proposals and sampled RoIs: the heads stay the configured ones
    train_cfg, test_cfg = cfg.model.train_cfg, cfg.model.test_cfg
    train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=50)
    test_cfg.rpn.update(nms_pre=200, max_per_img=50)
    rcnn = train_cfg.rcnn
    for stage in (rcnn if isinstance(rcnn, list) else [rcnn]):
        stage.sampler.num = 32
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 125, 130]], with_mask=True)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    attn = model.backbone.stages[0].blocks[0].attn
    assert attn.positional_encoding.grad is not None
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert {'bboxes', 'masks'} <= set(results[0].pred_instances.keys())


# -------------------------------------------------------------- segmentation
SEG_CONFIGS = configs_of('segmentation', '*flatten_swin*.py')


def test_segmentation_configs_are_the_paper_rows():
    assert SEG_CONFIGS == [
        'upernet_flatten_swin_small_8xb2-160k_ade20k-512x512.py',
        'upernet_flatten_swin_tiny_8xb2-160k_ade20k-512x512.py'
    ]


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_segmentor_loss_and_predict(name):
    pytest.importorskip('mmseg')
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.pretrained is None
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.FLattenSwin'
    assert backbone.arch in name and backbone.drop_path_rate == 0.3
    assert backbone.init_cfg.prefix == 'backbone.'
    assert list(cfg.model.decode_head.in_channels) == [96, 192, 384, 768]
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    shrink(backbone)
    cfg.model.decode_head.in_channels = TINY_DIMS
    cfg.model.decode_head.num_classes = 5
    cfg.model.auxiliary_head.in_channels = TINY_DIMS[2]
    cfg.model.auxiliary_head.num_classes = 5
    cfg.model.data_preprocessor.size = (64, 64)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    inputs = [torch.randint(0, 255, (3, 64, 80)).float() for _ in range(2)]
    samples = []
    for _ in range(2):
        sample = SegDataSample(
            gt_sem_seg=PixelData(data=torch.randint(0, 5, (1, 64, 80))))
        sample.set_metainfo(
            dict(img_shape=(64, 80), ori_shape=(64, 80), pad_shape=(64, 80)))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(
                dict(inputs=inputs, data_samples=samples), False),
            mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 64, 80)
