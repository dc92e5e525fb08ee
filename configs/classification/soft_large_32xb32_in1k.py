# SOFT-Large (config/SOFT_Large.yaml): lr 3.3e-4 per 1024 images
# (SOFT_Large_cuda.yaml: 3.5e-4), 32 GPUs x 32 images as
# soft_medium_32xb32_in1k.py.
_base_ = './soft_medium_32xb32_in1k.py'

model = dict(backbone=dict(arch='large'))
base_lr = 3.3e-4
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-6 / base_lr),
    _base_.param_scheduler[1],
]
