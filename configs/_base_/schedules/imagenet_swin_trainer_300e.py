# The ImageNet-1k schedule of the Swin trainer the official FLatten code runs
# (LeapLabTHU/FLatten-Transformer config.py defaults, i.e. FLatten-Swin-T):
# AdamW, weight decay 0.05 except 1-D parameters and biases (`scale`,
# `positional_encoding`, `pos_embed` and all conv / linear weights are
# decayed, as upstream); 20 warm-up epochs from WARMUP_LR = 1e-3 x lr, then
# cosine to MIN_LR = 0.01 x lr at epoch 300, per iteration; seed 0.
# Configs set lr = yaml BASE_LR (per 512 images) x their total batch / 512
# and whatever their yaml changes (warm-up, MIN_LR, epochs, grad clip).
_base_ = 'mmpretrain::_base_/default_runtime.py'

optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=5e-4 * 1024 / 512,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.01,
        by_epoch=True,
        begin=20,
        end=300,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
randomness = dict(seed=0)
