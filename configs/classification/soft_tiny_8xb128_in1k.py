# SOFT-Tiny on ImageNet-1k, the official recipe (fudan-zvg/SOFT main.py +
# config/SOFT_Tiny.yaml): AdamW lr 1e-3 per 1024 images, wd 0.05 (no decay
# for norms, biases and the cls token), 300 epochs, 10 warm-up epochs from
# 1e-6, per-epoch cosine to 5e-5, grad clip 1.0, EMA 0.99996, Mixup 0.8 /
# CutMix 1.0, RandAugment m9-mstd0.5, random erasing 0.25, label smoothing
# 0.1, drop path 0.1; evaluation at 224 with crop ratio 0.9 (bicubic).
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# The head keeps the base's init (the official one); there is no
# classifier-level init_cfg, so the backbone keeps its own (official)
# initialisation.
model = dict(
    backbone=dict(
        type='mmlinattn.SOFT',
        arch='tiny',
        out_type='cls_token',
        drop_path_rate=0.1),
    neck=None,
    head=dict(in_channels=512))

# timm crop_pct 0.9: resize the short edge to int(224 / 0.9) = 248
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=248,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

base_lr = 1e-3  # per 1024 images (yaml lr; main.py scales by batch / 1024)
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=base_lr,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6 / base_lr,
        by_epoch=True,
        begin=0,
        end=10),
    dict(
        type='CosineAnnealingLR',
        T_max=290,
        eta_min=5e-5,
        by_epoch=True,
        begin=10,
        end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)

custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
