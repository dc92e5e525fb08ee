# Mask R-CNN, SOFT-Large-Norm backbone, COCO 1x: README 47.0 / 42.2 (84M).
_base_ = './mask_rcnn_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_large_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
