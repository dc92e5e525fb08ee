# SOFT-Small: the README's 24M / 3.3G model (depths [1, 3, 7, 4]); the
# official repo's soft_small has depths [1, 3, 20, 4] (38.9M), available as
# arch=dict(embed_dims=[64, 128, 320, 512], num_heads=[2, 4, 10, 16],
# depths=[1, 3, 20, 4]). Recipe of config/SOFT_Small.yaml: lr 1e-3 per 1024,
# 128 images per GPU.
_base_ = './soft_tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='small'))
