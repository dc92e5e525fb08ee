# Semantic FPN with LITv2-S on ADE20K (paper: 44.3 mIoU, single scale).
# Official setting (ziplab/LITv2 segmentation/configs/litv2, mmseg 0.13):
# FPN (4 outputs) + FPNHead (128 channels, SyncBN), 512x512 crops, 80k
# iterations, 8 GPUs x 2 images, AdamW lr 1e-4, weight decay 1e-4, poly
# decay (power 0.9) to 1e-6 without warm-up, whole-image testing.
# Segmentation checkpoints normalise every output: norm0..norm3.
# ImageNet weights: tools/model_converters/litv22mmlinattn.py litv2_s.pth
#   checkpoints/litv2_small_in1k_backbone.pth --to seg
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch='small',
        alpha=0.9,
        local_ws=(0, 0, 2, 1),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_stage0_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/litv2_small_in1k_backbone.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768], num_outs=4),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
        weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
