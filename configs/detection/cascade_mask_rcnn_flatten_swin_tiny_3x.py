# Cascade Mask R-CNN + FPN with a FLatten-Swin-T backbone, COCO 3x: the
# Swin paper's cascade recipe the FLatten paper follows (4conv1fc box heads
# with SyncBN, GIoU loss, multi-scale 480-800 + DETR-style crop, 36 epochs,
# AdamW 1e-4 / weight decay 0.05, 8 GPUs x 2). Paper: 50.8 box AP /
# 44.1 mask AP (Swin-T: 50.4 / 43.7).
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_adamw_swin_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/flatten_swin_tiny_in1k.pth'  # see the docs


def box_head(target_stds):
    return dict(
        type='ConvFCBBoxHead',
        num_shared_convs=4,
        num_shared_fcs=1,
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenSwin',
        arch='tiny',
        attn_type='LLSS',
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(bbox_head=[
        box_head([0.1, 0.1, 0.2, 0.2]),
        box_head([0.05, 0.05, 0.1, 0.1]),
        box_head([0.033, 0.033, 0.067, 0.067])
    ]))
del box_head  # keep the dumped config plain

# augmentation strategy of the Swin 3x recipes (from DETR / Sparse R-CNN)
multi_scale = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
               (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
               (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[[
            dict(
                type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)
        ],
                    [
                        dict(
                            type='RandomChoiceResize',
                            scales=[(400, 1333), (500, 1333), (600, 1333)],
                            keep_ratio=True),
                        dict(
                            type='RandomCrop',
                            crop_type='absolute_range',
                            crop_size=(384, 600),
                            allow_negative_crop=True),
                        dict(
                            type='RandomChoiceResize',
                            scales=multi_scale,
                            keep_ratio=True)
                    ]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# the 1x schedule stretched to 36 epochs, steps at 27 and 33
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=max_epochs, milestones=[27, 33])
]
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
