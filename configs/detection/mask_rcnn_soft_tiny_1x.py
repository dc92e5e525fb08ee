# Mask R-CNN, SOFT-Tiny-Norm backbone, COCO 1x: README 41.2 box / 38.2 mask
# AP (33M). Backbone settings as retinanet_soft_tiny_1x.py (see
# docs/models/soft.md); optimiser as mmdet's PVT configs (AdamW lr 1e-4,
# wd 1e-4, 8 GPUs x 2 images).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# tools/model_converters/soft2mmlinattn.py SOFT_Tiny_norm.pth <this> --to det
checkpoint = 'checkpoints/soft_tiny_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.SOFT',
        arch='tiny',
        sym_norm=True,
        newton_variant='b_per_matrix',
        max_landmarks=256,
        with_cls_token=False,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
