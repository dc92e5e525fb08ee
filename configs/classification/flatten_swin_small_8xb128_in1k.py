# FLatten-Swin-S on ImageNet-1k, official recipe (cfgs/flatten_swin_s.yaml):
# as FLatten-Swin-T with drop path 0.3. Paper: 83.5 top-1.
_base_ = './flatten_swin_tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
