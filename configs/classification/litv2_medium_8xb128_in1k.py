# LITv2-M on ImageNet-1k, official recipe (README top-1 83.3); see
# litv2_small_8xb128_in1k.py.
_base_ = './litv2_small_8xb128_in1k.py'

model = dict(backbone=dict(arch='medium', drop_path_rate=0.3))
