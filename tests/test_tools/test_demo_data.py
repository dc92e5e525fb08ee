# Copyright (c) mmlinattn contributors. All rights reserved.
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mmlinattn.utils.demo_data import (CLASSES, SEG_CLASSES, make_coco,
                                       make_demo_data)


def _tree_files(root):
    return sorted(
        osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root)
        for f in fs)


def test_generator_is_deterministic(tmp_path):
    sizes = {'coco': dict(train=3), 'ade': dict(training=2),
             'imagenet': dict(train=1)}
    make_demo_data(str(tmp_path / 'a'), seed=3, sizes=sizes)
    make_demo_data(str(tmp_path / 'b'), seed=3, sizes=sizes)
    make_demo_data(str(tmp_path / 'c'), seed=4, sizes=sizes)
    files = _tree_files(tmp_path / 'a')
    assert files == _tree_files(tmp_path / 'b')
    assert len(files) > 10
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a', tmp_path / 'b',
                                           files, shallow=False)
    assert mismatch == [] and errors == []
    _, mismatch, _ = filecmp.cmpfiles(tmp_path / 'a', tmp_path / 'c', files,
                                      shallow=False)
    assert 'coco/annotations/instances_train.json' in mismatch


def test_coco_json_loads_with_pycocotools_and_masks_match_boxes(tmp_path):
    coco_api = pytest.importorskip('pycocotools.coco')
    ann_file = make_coco(str(tmp_path), 'train', num_images=12, seed=0)
    coco = coco_api.COCO(ann_file)
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
        list(CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 12
    for ann in anns:
        img = coco.loadImgs(ann['image_id'])[0]
        mask = coco.annToMask(ann)
        assert mask.shape == (img['height'], img['width'])
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        # the rasterised polygon fills its box up to the pixels that a
        # sharp vertex (triangle, star tip) may not cover
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
        assert abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.max() + 1 - (y + h)) <= 2
        assert abs(mask.sum() - ann['area']) <= 0.15 * ann['area'] + 10
        image = np.asarray(
            Image.open(osp.join(tmp_path, 'train', img['file_name'])))
        assert image.shape == (img['height'], img['width'], 3)


def test_coco_json_loads_with_mmdet_cocodataset(tmp_path):
    pytest.importorskip('mmdet')
    from mmdet.datasets import CocoDataset
    make_coco(str(tmp_path), 'val', num_images=5, seed=1)
    dataset = CocoDataset(
        data_root=str(tmp_path),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        metainfo=dict(classes=CLASSES),
        pipeline=[],
        test_mode=True)
    assert len(dataset) == 5
    info = dataset[0]
    assert osp.isfile(info['img_path'])
    assert all(0 <= inst['bbox_label'] < len(CLASSES)
               for inst in info['instances'])
    assert all(inst['mask'] for inst in info['instances'])


def test_ade_labels_and_imagenet_tree(demo_data_root):
    ade = osp.join(demo_data_root, 'ade')
    names = sorted(os.listdir(osp.join(ade, 'images', 'training')))
    assert names and all(n.endswith('.jpg') for n in names)
    for name in names:
        label = np.asarray(Image.open(osp.join(
            ade, 'annotations', 'training', name.replace('.jpg', '.png'))))
        image = Image.open(osp.join(ade, 'images', 'training', name))
        assert label.shape == (image.height, image.width)
        assert label.max() < len(SEG_CLASSES) and (label > 0).any()
    imagenet = osp.join(demo_data_root, 'imagenet')
    assert sorted(os.listdir(osp.join(imagenet, 'train'))) == sorted(CLASSES)
    with open(osp.join(demo_data_root, 'coco', 'annotations',
                       'instances_train.json')) as f:
        assert json.load(f)['images']
