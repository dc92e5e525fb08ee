# Cascade Mask R-CNN + FPN with a FLatten-Swin-S backbone, COCO 3x (recipe
# of cascade_mask_rcnn_flatten_swin_tiny_3x.py). Paper: 52.2 box AP /
# 45.4 mask AP (Swin-S: 51.9 / 45.0).
_base_ = './cascade_mask_rcnn_flatten_swin_tiny_3x.py'

checkpoint_file = 'checkpoints/flatten_swin_small_in1k.pth'  # see the docs
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')))
