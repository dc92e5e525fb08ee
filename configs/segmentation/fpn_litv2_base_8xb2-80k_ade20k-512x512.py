# Semantic FPN with LITv2-B on ADE20K (paper: 47.2 mIoU); see
# fpn_litv2_small_8xb2-80k_ade20k-512x512.py.
_base_ = './fpn_litv2_small_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/litv2_base_in1k_backbone.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
