# LITv2-B on ImageNet-1k, official recipe (README top-1 83.6); see
# litv2_small_8xb128_in1k.py.
_base_ = './litv2_small_8xb128_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5),
    head=dict(in_channels=1024))
