# Mask R-CNN + FPN with a UFO-ViT-S backbone, 1x schedule on COCO (the
# paper's dense-prediction experiment; its schedule and numbers could not be
# established, so this follows mmdet's Swin/PVT 1x recipe: AdamW lr 1e-4,
# wd 0.05, 12 epochs, steps at 8 and 11, single-scale 1333x800).
#
# The isotropic backbone yields stride-4/8/16/32 maps through its XCiT-style
# adapter (out_type='featmap'); all four have 384 channels.
# ImageNet weights: train configs/classification/ufo_vit_small_8xb128_in1k.py
# (no official UFO-ViT weights exist) and point `checkpoint` at the result,
# or override with --cfg-options model.backbone.init_cfg.checkpoint=...
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/coco_adamw_swin_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

pretrained = 'checkpoints/ufo_vit_small_8xb128_in1k.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.UFOViT',
        arch='small',
        img_size=224,  # ImageNet grid of the position embedding
        patch_size=16,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[384, 384, 384, 384]))

optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.gamma': dict(decay_mult=0.0),
            '.ls': dict(decay_mult=0.0),
        }))
