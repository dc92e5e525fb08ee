# Mask R-CNN, SOFT-Small-Norm backbone, COCO 1x: README 43.8 / 40.1 (44M).
_base_ = './mask_rcnn_soft_tiny_1x.py'

checkpoint = 'checkpoints/soft_small_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
