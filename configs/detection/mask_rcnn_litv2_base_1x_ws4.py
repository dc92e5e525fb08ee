# Mask R-CNN with LITv2-B, 4x4 HiLo windows in stage 3.
# Paper: 46.8 box / 42.3 mask AP.
# Only the window changes: the ImageNet weights (trained with 2x2) load
# unchanged because no HiLo parameter depends on the window size.
_base_ = './mask_rcnn_litv2_base_1x.py'

model = dict(backbone=dict(local_ws=(0, 0, 4, 1)))
