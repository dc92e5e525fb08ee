# Mask R-CNN + FPN with a FLatten-Swin-T backbone, COCO 1x (12 epochs,
# single scale 1333x800, 8 GPUs x 2 images): mmdet's Swin-T recipe (AdamW
# 1e-4, weight decay 0.05, none on norms and relative-bias tables), which
# the FLatten paper follows. Paper: 44.2 box AP / 40.2 mask AP
# (Swin-T: 43.7 / 39.8).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# ImageNet weights: the official FLatten-Swin-T checkpoint converted with
# tools/model_converters/flatten2mmlinattn.py (see docs/models/flatten.md).
checkpoint_file = 'checkpoints/flatten_swin_tiny_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenSwin',
        arch='tiny',
        attn_type='LLSS',  # linear stages global: no window, no padding
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
