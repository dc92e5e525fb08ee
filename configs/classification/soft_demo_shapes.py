# Demo: a small SOFT classifier on the synthetic ImageNet-style shapes tree
# (tools/misc/make_demo_data.py). 4 classes, 64x64 images, 800 iterations on
# CPU. Its checkpoint initialises the demo detector and segmentor backbones,
# so it is built as they are: no cls token, global average pooling.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# A shrunk SOFT (full SOFT-Tiny: arch='tiny'); head dim 32 as in the paper.
soft_demo_arch = dict(
    embed_dims=[32, 64, 128, 128], num_heads=[1, 2, 4, 4], depths=[1, 1, 2, 1])
# tools/demo.py --data-root sets MMLINATTN_DEMO_DATA
data_root = '{{$MMLINATTN_DEMO_DATA:data/demo}}/imagenet/'
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
        with_cls_token=False,
        out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
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
    batch_size=32,
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

max_iters = 800
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=200)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    # post-LN SOFT blocks: 2e-3 collapses from scratch, 1e-3 trains stably
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=80),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=80, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=200, by_epoch=False,
                    max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
# Same seed, same data order and augmentations, deterministic kernels:
# two runs on the same machine give the same metrics.
randomness = dict(seed=0, deterministic=True)
