# FLatten-PVT-T on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_pvt_t.yaml, 8 GPUs x 128).
# The other FLatten-PVT / FLatten-PVTv2 configs inherit from this file and
# change only the arch, batch size, learning rate, grad clip and drop path.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmlinattn.FLattenPVT',
        arch='tiny',
        attn_type='LLLL',
        la_sr_ratios=(1, 1, 1, 1),  # global linear attention everywhere
        focusing_factor=3,
        kernel_size=5,
        drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # timm Mixup 0.8 / CutMix 1.0, switching with probability 0.5
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# Training augmentation = the base (RandAugment m9-mstd0.5-inc, random
# erasing 0.25, bicubic random-resized crop). Evaluation as the official
# code: squash to 256x256 (aspect ratio NOT kept), centre-crop 224, bicubic,
# PIL decoding -- a shorter-side resize changes Acc@1.
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='Resize',
        scale=(256, 256),
        keep_ratio=False,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Optimiser: yaml BASE_LR 5e-4 per 512 images -> 1e-3 for 8 x 128. No
# weight decay on 1-D parameters and biases; `scale`,
# `positional_encoding` and `pos_embed` are decayed, as upstream.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=5e-4 * 128 * 8 / 512,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

# 5 warm-up epochs from WARMUP_LR (2e-3 x lr), cosine to MIN_LR (0.02 x lr)
# at epoch 300, then 10 cool-down epochs at MIN_LR (310 epochs in total).
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=2e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.02,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
randomness = dict(seed=0)
