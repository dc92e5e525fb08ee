# RetinaNet with LITv2-S, 1x schedule on COCO (paper: 44.0 box AP). Official
# setting (ziplab/LITv2 detection/configs/litv2, results from its mmdet 2.11
# release): AdamW lr 1e-4, weight decay 1e-4, 12 epochs (steps 8, 11),
# 1333x800, 8 GPUs x 2 images, fp16 (add --amp to tools/train.py).
# Differences from the official config, on purpose:
# * its RetinaNet `paramwise_cfg` was never applied (no `custom_keys`); we
#   apply the intended zero decay on norms, as its Mask R-CNN configs do;
# * `out_indices=(1, 2, 3)` + `start_level=0` instead of computing the unused
#   stage 0: same FPN and the same parameter names, no unused parameters.
# ImageNet weights: tools/model_converters/litv22mmlinattn.py litv2_s.pth
#   checkpoints/litv2_small_in1k_backbone.pth --to det
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch='small',
        alpha=0.9,
        local_ws=(0, 0, 2, 1),
        drop_path_rate=0.2,
        # Only the stages the FPN uses (DDP flags unused parameters).
        out_indices=(1, 2, 3),
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/litv2_small_in1k_backbone.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
