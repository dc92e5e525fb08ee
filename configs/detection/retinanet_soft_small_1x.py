# RetinaNet, SOFT-Small-Norm backbone, COCO 1x: README 42.8 box AP (34M).
_base_ = './retinanet_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_small_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
