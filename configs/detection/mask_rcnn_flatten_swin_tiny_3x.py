# Mask R-CNN + FPN with a FLatten-Swin-T backbone, COCO 3x (36 epochs) with
# mmdet's Swin multi-scale + crop augmentation (480-800 short side,
# DETR-style random crop), AdamW 1e-4 / weight decay 0.05, 8 GPUs x 2.
# Paper: 46.5 box AP / 42.1 mask AP (Swin-T: 46.0 / 41.6).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/flatten_swin_tiny_in1k.pth'  # see the docs
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
    neck=dict(in_channels=[96, 192, 384, 768]))
