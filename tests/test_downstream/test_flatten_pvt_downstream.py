# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLatten-PVT configs in mmpretrain, mmdet and mmseg: every config builds,
and shrunk copies of the real models run loss and predict."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(
    embed_dims=[16, 16, 32, 32],
    depths=[1, 1, 1, 1],
    num_heads=[1, 1, 2, 2],
    mlp_ratios=[2, 2, 2, 2])


def config(folder, name):
    return Config.fromfile(osp.join(REPO, 'configs', folder, name))


def shrink(backbone, **kwargs):
    backbone.update(arch=TINY, pretrain_img_size=64, init_cfg=None, **kwargs)


def configs_of(folder):
    return sorted(
        osp.basename(p) for p in glob.glob(
            osp.join(REPO, 'configs', folder, '*flatten_pvt*.py')))


# ------------------------------------------------------------ classification
@pytest.mark.parametrize('name', configs_of('classification'))
def test_classification_configs_follow_the_official_recipe(name):
    pytest.importorskip('mmpretrain')
    cfg = config('classification', name)
    assert cfg.default_scope == 'mmpretrain'
    backbone = cfg.model.backbone
    assert backbone.type in ('mmlinattn.FLattenPVT', 'mmlinattn.FLattenPVTv2')
    batch = cfg.train_dataloader.batch_size
    assert name.endswith(f'_8xb{batch}_in1k.py')
    # yaml BASE_LR 5e-4 per 512 images, linearly scaled to 8 x batch
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(5e-4 * batch / 64)
    assert cfg.auto_scale_lr.base_batch_size == 8 * batch
    heavy = backbone.arch in ('medium', 'large', 'b3', 'b4')
    assert backbone.drop_path_rate == (0.3 if heavy else 0.1)
    clip = cfg.optim_wrapper.get('clip_grad')
    assert (clip['max_norm'] if clip else None) == (1.0 if heavy else None)
    assert cfg.train_cfg.max_epochs == 310
    assert cfg.param_scheduler[1].end == 300
    from mmlinattn.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(backbone)
    assert model.embed_dims[-1] == cfg.model.head.in_channels


def test_eval_transform_squashes_to_256_then_crops_224(tmp_path):
    pytest.importorskip('mmpretrain')
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from PIL import Image
    init_default_scope('mmpretrain')
    cfg = config('classification', 'flatten_pvt_tiny_8xb128_in1k.py')
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 420, 3), np.uint8))
    image.save(tmp_path / 'img.png')
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    out = pipeline(dict(img_path=str(tmp_path / 'img.png')))
    got = out['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]  # BGR -> RGB
    expected = np.asarray(image.resize((256, 256), Image.BICUBIC))[16:240,
                                                                   16:240]
    assert got.shape == (224, 224, 3)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    'name',
    ['flatten_pvt_tiny_8xb128_in1k.py', 'flatten_pvt_v2_b0_8xb128_in1k.py'])
def test_classifier_loss_and_predict(name):
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    cfg = config('classification', name)
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
    model.eval()
    with torch.no_grad():
        preds = model(
            **model.data_preprocessor(
                dict(inputs=list(inputs), data_samples=samples), False),
            mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


# ----------------------------------------------------------------- detection
@pytest.mark.parametrize('name', configs_of('detection'))
def test_detector_loss_and_predict(name):
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = config('detection', name)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    assert backbone.type == 'mmlinattn.FLattenPVT' and backbone.arch == 'tiny'
    assert backbone.init_cfg.prefix == 'backbone.'
    full = [64, 128, 320, 512]
    assert list(
        cfg.model.neck.in_channels) == [full[i] for i in backbone.out_indices]
    shrink(backbone)
    cfg.model.neck.in_channels = [
        TINY['embed_dims'][i] for i in backbone.out_indices
    ]
    model = MODELS.build(cfg.model)
    model.init_weights()
    with_mask = 'mask' in name
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]], with_mask=with_mask)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert 'bboxes' in results[0].pred_instances
    if with_mask:
        assert 'masks' in results[0].pred_instances


# -------------------------------------------------------------- segmentation
@pytest.mark.parametrize('name', configs_of('segmentation'))
def test_segmentor_loss_and_predict(name):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = config('segmentation', name)
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.pretrained is None
    assert cfg.model.backbone.type == 'mmlinattn.FLattenPVT'
    shrink(cfg.model.backbone)
    cfg.model.neck.in_channels = TINY['embed_dims']
    cfg.model.data_preprocessor.size = (64, 80)
    cfg.model.decode_head.num_classes = 5
    model = MODELS.build(cfg.model)
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
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(
                dict(inputs=inputs, data_samples=samples), False),
            mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 64, 80)
