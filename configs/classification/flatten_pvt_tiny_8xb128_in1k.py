# FLatten-PVT-T on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_pvt_t.yaml, 8 GPUs x 128).
# The other FLatten-PVT / FLatten-PVTv2 configs inherit from this file and
# change only the arch, batch size, learning rate, grad clip and drop path.
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    '../_base_/datasets/imagenet_bs64_swin_224_squash.py',
    '../_base_/schedules/imagenet_swin_trainer_300e.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmlinattn.FLattenPVT',
        arch='tiny',
        attn_type='LLLL',
        la_sr_ratios=(1, 1, 1, 1),  # global linear attention everywhere
        focusing_factor=3,
        kernel_size=5,
        drop_path_rate=0.1),
    head=dict(in_channels=512))

train_dataloader = dict(batch_size=128)

# yaml BASE_LR 5e-4 per 512 images -> 1e-3 for 8 x 128.
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 128 * 8 / 512))

# 5 warm-up epochs from WARMUP_LR (2e-3 x lr), cosine to MIN_LR (0.02 x lr)
# at epoch 300, then 10 cool-down epochs at MIN_LR (310 epochs in total).
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=2e-3, end=5),
    dict(_base_.param_scheduler[1], eta_min_ratio=0.02, begin=5),
]
train_cfg = dict(max_epochs=310)
