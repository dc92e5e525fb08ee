# Mask R-CNN + FPN with a FLatten-PVT-T backbone, COCO 1x (12 epochs, single
# scale 1333x800, 8 GPUs x 2 images): the PVT detection recipe (AdamW 2e-4,
# weight decay 1e-4) the FLatten paper follows. Paper: 38.2 box AP /
# 37.0 mask AP (PVT-T: 36.7 / 35.1).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# ImageNet weights: the official FLatten-PVT-T checkpoint converted with
# tools/model_converters/flatten2mmlinattn.py (see docs/models/flatten.md).
checkpoint_file = 'checkpoints/flatten_pvt_tiny_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenPVT',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0002, weight_decay=0.0001))
