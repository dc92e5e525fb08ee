# RetinaNet, SOFT-Tiny-Norm backbone, COCO 1x: the README's 40.0 box AP row
# (23M). The authors released no detection code; backbone settings are ours
# (docs/models/soft.md): PVT-v1-style stage 4 without the cls token, all
# landmark grids capped at 256 landmarks (the official fixed-stride rule
# gives ~1,000 per stage at 800x1333), batch-independent Newton-Schulz step
# size, stem BatchNorm frozen in eval mode. Optimiser as mmdet's PVT
# RetinaNet (AdamW lr 1e-4, wd 1e-4, 8 GPUs x 2 images).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
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
        # only the stages FPN uses (mmdet Swin RetinaNet convention)
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[128, 320, 512], start_level=0, num_outs=5))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
