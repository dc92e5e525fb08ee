# SOFT-Large-Norm (config/SOFT_Large_norm.yaml): SOFT-Large's recipe (lr
# 3.3e-4 per 1024 images, 32 GPUs x 32 images) with the symmetric
# normalisation.
_base_ = './soft_large_32xb32_in1k.py'

model = dict(backbone=dict(sym_norm=True))
