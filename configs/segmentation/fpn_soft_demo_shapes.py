# Demo: Semantic FPN with a small SOFT backbone on the synthetic ADE20K-style
# shapes tree (tools/misc/make_demo_data.py); 5 classes incl. background,
# 300 iterations on CPU; backbone from the demo classifier's checkpoint.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

soft_demo_arch = dict(
    embed_dims=[32, 64, 128, 128], num_heads=[1, 2, 4, 4], depths=[1, 1, 2, 1])
# tools/demo.py --data-root sets MMLINATTN_DEMO_DATA
data_root = '{{$MMLINATTN_DEMO_DATA:data/demo}}/ade/'
metainfo = dict(
    classes=('background', 'circle', 'square', 'triangle', 'star'),
    palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200],
             [245, 130, 48]])
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    # the base's ImageNet ResNet URL would be handed to our backbone
    pretrained=None,
    # Padding labelled background (black pixels) instead of 255: mmseg
    # 1.2.2's weighted cross entropy indexes class_weight by every label.
    data_preprocessor=dict(size=None, size_divisor=32, seg_pad_val=0),
    backbone=dict(
        _delete_=True,
        type='mmlinattn.SOFT',
        arch=soft_demo_arch,
        pretrain_img_size=64,
        with_cls_token=False,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=64, num_outs=4),
    decode_head=dict(
        in_channels=[64, 64, 64, 64],
        channels=64,
        num_classes=5,
        norm_cfg=norm_cfg,
        # Pixel shares of the training set: background 87.0 %, circle 5.0,
        # square 3.5, star 2.4, triangle 2.1. Unweighted, the shapes are
        # learnt in that order and triangles can stay at IoU 0 after 300
        # iterations; weights ~ 1 / sqrt(share) (background 1).
        loss_decode=dict(class_weight=[1.0, 4.0, 5.0, 6.5, 6.0])))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs')
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters,
         eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False,
                    max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
# Same seed, same data order and augmentations, deterministic kernels:
# two runs on the same machine give the same metrics.
randomness = dict(seed=0, deterministic=True)
