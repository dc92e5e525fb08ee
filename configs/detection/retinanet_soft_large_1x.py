# RetinaNet, SOFT-Large-Norm backbone, COCO 1x: README 45.3 box AP (74M).
_base_ = './retinanet_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_large_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
