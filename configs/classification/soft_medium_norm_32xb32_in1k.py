# SOFT-Medium-Norm (config/SOFT_Medium_norm.yaml): lr 4e-4 per 1024 images,
# 32 GPUs x 32 images as soft_medium_32xb32_in1k.py.
_base_ = './soft_medium_32xb32_in1k.py'

model = dict(backbone=dict(sym_norm=True))
base_lr = 4e-4
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-6 / base_lr),
    _base_.param_scheduler[1],
]
