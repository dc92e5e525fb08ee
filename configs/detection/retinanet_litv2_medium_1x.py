# RetinaNet with LITv2-M, 1x (paper: 46.0 box AP); see
# retinanet_litv2_small_1x.py.
_base_ = './retinanet_litv2_small_1x.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='checkpoints/litv2_medium_in1k_backbone.pth')))
