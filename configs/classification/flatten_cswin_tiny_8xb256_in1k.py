# FLatten-CSwin-T on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_cswin_t.yaml, main_ema.py,
# 8 GPUs x 256, model EMA 0.99984). FLatten-CSwin-S / -B / -B-384 inherit
# from this file. Paper: 83.1 top-1 (official log 83.130 / 96.376).
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    '../_base_/datasets/imagenet_bs64_swin_224_squash.py',
    '../_base_/schedules/imagenet_swin_trainer_300e.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmlinattn.FLattenCSWin',
        arch='tiny',
        attn_type='LLSS',  # global focused linear attention + LePE in 1-2
        focusing_factor=3,
        kernel_size=5,
        drop_path_rate=0.2),
    head=dict(in_channels=512))

train_dataloader = dict(batch_size=256)

# yaml BASE_LR 5e-4 per 512 images -> 2e-3 for 8 x 256. No gradient
# clipping.
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 256 * 8 / 512))

# 20 warm-up epochs from WARMUP_LR (2e-3 x lr), cosine to MIN_LR
# (0.02 x lr) at epoch 300, then 10 cool-down epochs at MIN_LR.
param_scheduler = [
    dict(_base_.param_scheduler[0], start_factor=2e-3),
    dict(_base_.param_scheduler[1], eta_min_ratio=0.02),
]
train_cfg = dict(max_epochs=310)
auto_scale_lr = dict(base_batch_size=2048)

# Model EMA updated after every step (timm ModelEma decay 0.99984);
# validation runs on the EMA weights.
custom_hooks = [
    dict(type='EMAHook', momentum=1 - 0.99984, priority='ABOVE_NORMAL')
]
