# Copyright (c) mmlinattn contributors. All rights reserved.
"""Deterministic synthetic datasets in real on-disk formats for the demo.

Coloured geometric shapes (circle, square, triangle, star) of varied size,
position, rotation, colour and texture on textured backgrounds, written as

* ``coco/``: COCO instances json (boxes + polygon masks) with PNG images,
* ``ade/``: an ADE20K-style tree (``images/{training,validation}`` JPEGs,
  ``annotations/{training,validation}`` label PNGs; 0 = background),
* ``imagenet/``: an ImageNet-style class-folder tree (``train/<class>/``,
  ``val/<class>/``) with one shape per image.

Everything depends only on ``seed``: the same seed gives byte-identical
files. Objects never overlap, so polygons, boxes and label maps agree.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'star')
# 0 is the background in the segmentation label maps.
SEG_CLASSES: Tuple[str, ...] = ('background', ) + CLASSES
SEG_PALETTE: List[List[int]] = [[0, 0, 0], [230, 25, 75], [60, 180, 75],
                                [0, 130, 200], [245, 130, 48]]

Polygon = List[Tuple[float, float]]


def shape_polygon(kind: str, cx: float, cy: float, radius: float,
                  angle: float) -> Polygon:
    """Vertices of a shape centred at (cx, cy) with circumradius ``radius``."""
    if kind == 'circle':
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        radii = np.full_like(angles, radius)
    elif kind == 'square':
        angles = angle + np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        radii = np.full_like(angles, radius)
    elif kind == 'triangle':
        angles = angle + np.array([0, 2 / 3, 4 / 3]) * math.pi
        radii = np.full_like(angles, radius)
    elif kind == 'star':
        angles = angle + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    else:
        raise ValueError(f'unknown shape {kind!r}; valid: {CLASSES}')
    return [(float(cx + r * math.cos(a)), float(cy + r * math.sin(a)))
            for a, r in zip(angles, radii)]


def _background(rng: np.random.RandomState, h: int, w: int) -> np.ndarray:
    """Textured background: colour gradient, optional stripes, noise."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    t = np.linspace(0, 1, w)[None, :, None] if rng.rand() < 0.5 else \
        np.linspace(0, 1, h)[:, None, None]
    img = c0 * (1 - t) + c1 * t
    img = np.broadcast_to(img, (h, w, 3)).copy()
    if rng.rand() < 0.5:
        period = rng.uniform(6, 20)
        yy, xx = np.mgrid[0:h, 0:w]
        theta = rng.uniform(0, math.pi)
        stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) /
                         period * 2 * math.pi)
        img += stripes[..., None] * rng.uniform(5, 15)
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape)
    return img


def _draw_objects(rng: np.random.RandomState, h: int, w: int,
                  kinds: Sequence[str], min_radius: float,
                  max_radius: float) -> Tuple[np.ndarray, np.ndarray, list]:
    """Image, label map and [(kind, polygon)] with non-overlapping shapes."""
    img = _background(rng, h, w)
    label = Image.new('L', (w, h), 0)
    placed: List[Tuple[float, float, float]] = []
    objects = []
    for kind in kinds:
        for _ in range(50):  # rejection sampling of a free spot
            radius = rng.uniform(min_radius, max_radius)
            cx = rng.uniform(radius + 1, w - radius - 1)
            cy = rng.uniform(radius + 1, h - radius - 1)
            if all((cx - x)**2 + (cy - y)**2 > (radius + r + 2)**2
                   for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        poly = shape_polygon(kind, cx, cy, radius, rng.uniform(0, 2 * math.pi))
        mask_img = Image.new('L', (w, h), 0)
        ImageDraw.Draw(mask_img).polygon(poly, fill=1)
        mask = np.asarray(mask_img, dtype=bool)
        # a colour that stands out from the background under the shape
        background = img[mask].mean(0)
        for _ in range(20):
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - background) > 120:
                break
        texture = rng.normal(0, rng.uniform(2, 15), size=(h, w, 3))
        img[mask] = (colour + texture)[mask]
        ImageDraw.Draw(label).polygon(poly, fill=CLASSES.index(kind) + 1)
        objects.append((kind, poly))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img, np.asarray(label, dtype=np.uint8), objects


def _image_size(rng: np.random.RandomState,
                size_range: Tuple[int, int]) -> Tuple[int, int]:
    lo, hi = size_range
    return int(rng.randint(lo, hi + 1)), int(rng.randint(lo, hi + 1))


def _polygon_area(poly: Polygon) -> float:
    xs = np.array([p[0] for p in poly])
    ys = np.array([p[1] for p in poly])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) -
                           np.dot(ys, np.roll(xs, 1))))


def make_coco(out_dir: str, split: str, num_images: int, seed: int,
              size_range: Tuple[int, int] = (112, 160)) -> str:
    """Write ``<out_dir>/<split>/*.png`` and
    ``annotations/instances_<split>.json``; returns the json path."""
    rng = np.random.RandomState(seed)
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        h, w = _image_size(rng, size_range)
        kinds = [CLASSES[i] for i in rng.randint(0, len(CLASSES),
                                                 rng.randint(1, 4))]
        img, _, objects = _draw_objects(rng, h, w, kinds, 10,
                                        min(h, w) / 4)
        file_name = f'{split}_{image_id:05d}.png'
        Image.fromarray(img).save(osp.join(out_dir, split, file_name))
        images.append(dict(id=image_id, file_name=file_name, width=w,
                           height=h))
        for kind, poly in objects:
            xs = [p[0] for p in poly]
            ys = [p[1] for p in poly]
            x0, y0 = min(xs), min(ys)
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id,
                     category_id=CLASSES.index(kind) + 1,
                     bbox=[round(x0, 2), round(y0, 2),
                           round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
                     area=round(_polygon_area(poly), 2),
                     segmentation=[[round(c, 2) for p in poly for c in p]],
                     iscrowd=0))
    coco = dict(
        info=dict(description='mmlinattn synthetic shapes (demo)',
                  version='1.0', year=2026),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape')
                    for i, n in enumerate(CLASSES)])
    ann_path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
    with open(ann_path, 'w') as f:
        json.dump(coco, f)
    return ann_path


def make_ade(out_dir: str, split: str, num_images: int, seed: int,
             size_range: Tuple[int, int] = (112, 160)) -> None:
    """ADE20K-style ``images/<split>/*.jpg`` + ``annotations/<split>/*.png``
    (pixel value = index into :data:`SEG_CLASSES`)."""
    rng = np.random.RandomState(seed)
    for sub in ('images', 'annotations'):
        os.makedirs(osp.join(out_dir, sub, split), exist_ok=True)
    for index in range(num_images):
        h, w = _image_size(rng, size_range)
        kinds = [CLASSES[i] for i in rng.randint(0, len(CLASSES),
                                                 rng.randint(2, 5))]
        img, label, _ = _draw_objects(rng, h, w, kinds, 10, min(h, w) / 4)
        name = f'ADE_{split}_{index:08d}'
        Image.fromarray(img).save(
            osp.join(out_dir, 'images', split, name + '.jpg'), quality=95)
        Image.fromarray(label).save(
            osp.join(out_dir, 'annotations', split, name + '.png'))


def make_imagenet(out_dir: str, split: str, per_class: int, seed: int,
                  size: int = 64) -> None:
    """``<split>/<class>/*.png`` with one shape per image."""
    rng = np.random.RandomState(seed)
    for kind in CLASSES:
        os.makedirs(osp.join(out_dir, split, kind), exist_ok=True)
    for index in range(per_class):
        for kind in CLASSES:
            img, _, _ = _draw_objects(rng, size, size, [kind], size / 6,
                                      size / 2.5)
            Image.fromarray(img).save(
                osp.join(out_dir, split, kind, f'{kind}_{index:05d}.png'))


DEFAULT_SIZES: Dict[str, Dict[str, int]] = {
    'coco': dict(train=800, val=100),
    'ade': dict(training=600, validation=100),
    'imagenet': dict(train=1000, val=50),  # per class
}


def make_demo_data(root: str,
                   seed: int = 0,
                   tasks: Sequence[str] = ('coco', 'ade', 'imagenet'),
                   sizes: Optional[Dict[str, Dict[str, int]]] = None) -> None:
    """Generate all demo datasets under ``root`` (deterministic in seed)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    for task_index, task in enumerate(tasks):
        for split_index, (split, count) in enumerate(sizes[task].items()):
            split_seed = seed * 1000 + task_index * 10 + split_index
            if task == 'coco':
                make_coco(osp.join(root, 'coco'), split, count, split_seed)
            elif task == 'ade':
                make_ade(osp.join(root, 'ade'), split, count, split_seed)
            elif task == 'imagenet':
                make_imagenet(osp.join(root, 'imagenet'), split, count,
                              split_seed)
            else:
                raise ValueError(f'unknown demo task {task!r}; valid: '
                                 f'{sorted(DEFAULT_SIZES)}')
    with open(osp.join(root, 'README.txt'), 'w') as f:
        f.write('Synthetic shapes generated by tools/misc/make_demo_data.py '
                f'(seed={seed}). Safe to delete; regenerated on demand.\n')
