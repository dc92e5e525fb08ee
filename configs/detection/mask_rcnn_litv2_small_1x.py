# Mask R-CNN with LITv2-S, 1x schedule on COCO (paper: 44.9 box / 40.8 mask
# AP). Official setting (ziplab/LITv2 detection/configs/litv2, results from
# its mmdet 2.11 release): AdamW lr 2e-4, weight decay 1e-4 (0 on norms),
# 12 epochs (steps 8, 11), 1333x800, 8 GPUs x 2 images, fp16 (add --amp to
# tools/train.py). The official repository's current (mmdet 3.2) version of
# this config inherits a base file that no longer exists and mmdet-2 keys
# that mmdet 3 ignores, so it would silently train with SGD lr 0.02; this
# one trains with the paper's AdamW.
# ImageNet weights: tools/model_converters/litv22mmlinattn.py litv2_s.pth
#   checkpoints/litv2_small_in1k_backbone.pth --to det
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch='small',
        alpha=0.9,
        local_ws=(0, 0, 2, 1),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_stage0_norm=False,  # official detection checkpoints: no norm0
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/litv2_small_in1k_backbone.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=2e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
