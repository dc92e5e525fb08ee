# RetinaNet with LITv2-B, 1x (paper: 46.7 box AP); see
# retinanet_litv2_small_1x.py. Activation checkpointing as upstream.
_base_ = './retinanet_litv2_small_1x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(checkpoint='checkpoints/litv2_base_in1k_backbone.pth')),
    neck=dict(in_channels=[256, 512, 1024]))
