# RetinaNet with LITv2-B, 4x4 HiLo windows in stage 3.
# Paper: 46.3 box AP.
# Only the window changes: the ImageNet weights (trained with 2x2) load
# unchanged because no HiLo parameter depends on the window size.
_base_ = './retinanet_litv2_base_1x.py'

model = dict(backbone=dict(local_ws=(0, 0, 4, 1)))
