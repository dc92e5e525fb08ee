# Mask R-CNN, SOFT-Medium-Norm backbone, COCO 1x: README 46.6 / 42.0 (65M).
_base_ = './mask_rcnn_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_medium_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 288, 512]))
