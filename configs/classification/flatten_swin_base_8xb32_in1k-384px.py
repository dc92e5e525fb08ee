# FLatten-Swin-B fine-tuned at 384x384 from the 224 model, official recipe
# (cfgs/flatten_swin_b_384.yaml with --pretrained): 30 epochs, 8 GPUs x 32,
# lr 1e-5, weight decay 1e-8, drop path 0.5; linear stages global on the
# 96x96 / 48x48 maps, softmax windows 12. Paper: 85.0 top-1.
_base_ = './flatten_swin_base_8xb64_in1k.py'

# The converted 224 classifier (docs/models/flatten.md). Loading resizes
# `positional_encoding` (56 -> 96, 28 -> 48) and the relative-bias tables
# (window 7 -> 12) bicubically, as the official `load_pretrained`.
checkpoint_224 = 'checkpoints/flatten_swin_base_in1k.pth'
model = dict(
    backbone=dict(arch='base-384'),
    init_cfg=dict(type='Pretrained', checkpoint=checkpoint_224))

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=384,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
# TEST.CROP False: a direct (squashing) resize to 384x384, no crop.
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='Resize',
        scale=(384, 384),
        keep_ratio=False,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# yaml BASE_LR 2e-5 per 512 -> 1e-5 for 8 x 32; WARMUP_LR / MIN_LR scale
# alike (1e-3 x and 0.01 x lr).
optim_wrapper = dict(optimizer=dict(lr=2e-5 * 32 * 8 / 512, weight_decay=1e-8))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=5),
    dict(_base_.param_scheduler[1], begin=5, end=30),
]
train_cfg = dict(max_epochs=30)
auto_scale_lr = dict(base_batch_size=256)
