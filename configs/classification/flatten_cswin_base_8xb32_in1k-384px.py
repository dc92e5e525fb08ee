# FLatten-CSwin-B fine-tuned at 384x384 from the 224 model, official recipe
# (cfgs/flatten_cswin_b_384.yaml with --pretrained): 20 + 10 cool-down
# epochs, 8 GPUs x 32, lr 2.5e-6, no warm-up, weight decay 1e-8, drop path
# 0.7, EMA 0.99982; linear stages global on the 96x96 / 48x48 maps,
# stripes 12. Paper: 85.5 top-1.
_base_ = './flatten_cswin_base_8xb64_in1k.py'

# The converted 224 classifier (docs/models/flatten.md); loading resizes
# `positional_encoding` (56 -> 96, 28 -> 48) bicubically, as the official
# `load_pretrained`.
checkpoint_224 = 'checkpoints/flatten_cswin_base_in1k.pth'
model = dict(
    backbone=dict(arch='base-384', drop_path_rate=0.7),
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
# TEST.CROP True: squash to int(256 / 224 * 384) = 438, centre-crop 384.
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='Resize',
        scale=(438, 438),
        keep_ratio=False,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# yaml BASE_LR 5e-6 per 512 -> 2.5e-6 for 8 x 32; MIN_LR 0.1 x lr, no
# warm-up (WARMUP_EPOCHS 0), 20 cosine epochs then 10 at MIN_LR.
optim_wrapper = dict(optimizer=dict(lr=5e-6 * 32 * 8 / 512, weight_decay=1e-8))
param_scheduler = [
    dict(_base_.param_scheduler[1], eta_min_ratio=0.1, begin=0, end=20),
]
train_cfg = dict(max_epochs=30)
auto_scale_lr = dict(base_batch_size=256)
