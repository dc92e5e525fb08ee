# Semantic FPN with a FLatten-PVT-T backbone on ADE20K, the PVT segmentation
# recipe the FLatten paper follows: 512x512 crops, 8 GPUs x 4 images, 40k
# iterations, AdamW 2e-4 (weight decay 1e-4), poly decay (power 0.9) to 0.
# Paper: 37.21 mIoU / 48.95 mAcc (PVT-T: 36.57 / 46.72).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/flatten_pvt_tiny_in1k.pth'  # see the docs
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # the base's ResNet weights; we use init_cfg below
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenPVT',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=0.0,
        begin=0,
        end=40000,
        by_epoch=False)
]
