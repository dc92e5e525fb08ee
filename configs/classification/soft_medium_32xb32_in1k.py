# SOFT-Medium (config/SOFT_Medium.yaml): lr 3.5e-4 per 1024 images,
# 32 images per GPU. The official main.py scales the yaml lr by the total
# batch / 1024 and the GPU count is not documented: this config assumes 32
# GPUs (1024 images); with fewer GPUs pass --auto-scale-lr (base 1024), the
# same linear rule. The other 32 x 32 SOFT configs (-Medium-Norm, -Large,
# -Huge and their -Norm) inherit from this file.
_base_ = './soft_tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='medium'))
train_dataloader = dict(batch_size=32)
val_dataloader = dict(batch_size=32)
test_dataloader = val_dataloader
base_lr = 3.5e-4
optim_wrapper = dict(optimizer=dict(lr=base_lr))
# SOFT-Tiny's schedule; the warm-up still starts at 1e-6.
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=1e-6 / base_lr),
    _base_.param_scheduler[1],
]
