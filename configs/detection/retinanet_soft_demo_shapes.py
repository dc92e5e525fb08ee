# Demo: RetinaNet with a small SOFT backbone on the synthetic COCO-format
# shapes dataset (tools/misc/make_demo_data.py). 300 iterations on CPU; the
# demo initialises the backbone from the demo classifier's checkpoint.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

soft_demo_arch = dict(
    embed_dims=[32, 64, 128, 128], num_heads=[1, 2, 4, 4], depths=[1, 1, 2, 1])
# tools/demo.py --data-root sets MMLINATTN_DEMO_DATA
data_root = '{{$MMLINATTN_DEMO_DATA:data/demo}}/coco/'
classes = ('circle', 'square', 'triangle', 'star')

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.SOFT',
        arch=soft_demo_arch,
        pretrain_img_size=64,
        with_cls_token=False,
        # Only the stages the FPN uses (DDP would flag unused parameters).
        out_indices=(1, 2, 3)),
    neck=dict(
        in_channels=[64, 128, 128],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        num_classes=len(classes),
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        anchor_generator=dict(octave_base_scale=3)))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False)
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10.0))
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
