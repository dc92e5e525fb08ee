# Mask R-CNN with LITv2-M, 1x (paper: 46.8 box / 42.3 mask AP); see
# mask_rcnn_litv2_small_1x.py.
_base_ = './mask_rcnn_litv2_small_1x.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='checkpoints/litv2_medium_in1k_backbone.pth')))
