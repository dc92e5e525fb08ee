# RetinaNet, SOFT-Medium-Norm backbone, COCO 1x: README 44.3 box AP (55M).
_base_ = './retinanet_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_medium_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[128, 288, 512]))
