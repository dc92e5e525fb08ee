# FLatten-Swin-T on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_swin_t.yaml + config.py
# defaults, 8 GPUs x 128). FLatten-Swin-S / -B / -B-384 inherit from this
# file. Paper: 82.1 top-1 (official log 82.106 / 95.900).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmlinattn.FLattenSwin',
        arch='tiny',
        attn_type='LLSS',  # global focused linear attention in stages 1-2
        focusing_factor=3,
        kernel_size=5,
        drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # timm Mixup 0.8 / CutMix 1.0, switching with probability 0.5
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# Training augmentation = the base (bicubic random-resized crop, flip,
# RandAugment m9-mstd0.5-inc, random erasing 0.25). Evaluation as the
# official code: squash to 256x256 (aspect ratio NOT kept), centre-crop 224,
# bicubic, PIL decoding; a shorter-side resize changes Acc@1.
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

# yaml BASE_LR 5e-4 per 512 images -> 1e-3 for 8 x 128. No weight decay on
# 1-D parameters, biases and relative-bias tables (Swin's skip list);
# `scale` and `positional_encoding` are decayed, as upstream. Gradient
# norm clipped at 5.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=5e-4 * 128 * 8 / 512,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.relative_position_bias_table': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))

# 20 warm-up epochs from WARMUP_LR (1e-3 x lr), then cosine to MIN_LR
# (0.01 x lr) at epoch 300, per iteration.
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
