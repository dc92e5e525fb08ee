# Semantic FPN with LITv2-M on ADE20K (paper: 45.7 mIoU); see
# fpn_litv2_small_8xb2-80k_ade20k-512x512.py.
_base_ = './fpn_litv2_small_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='checkpoints/litv2_medium_in1k_backbone.pth')))
