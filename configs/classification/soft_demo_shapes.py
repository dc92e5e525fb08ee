# Demo: a small SOFT classifier on the synthetic ImageNet-style shapes tree
# (tools/misc/make_demo_data.py). 4 classes, 64x64 images, 300 iterations on
# CPU. Its checkpoint initialises the demo detector and segmentor backbones.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# A shrunk SOFT (full SOFT-Tiny: arch='tiny'); head dim 32 as in the paper.
soft_demo_arch = dict(
    embed_dims=[32, 64, 128, 128], num_heads=[1, 2, 4, 4], depths=[1, 1, 2, 1])
data_root = 'data/demo/imagenet/'
classes = ('circle', 'square', 'star', 'triangle')  # sorted folder names

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=len(classes),
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='mmlinattn.SOFT',
        arch=soft_demo_arch,
        pretrain_img_size=64,
        out_type='cls_token',
        drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=len(classes),
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        classes=classes,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=25,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        classes=classes,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=100)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False,
                    max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
