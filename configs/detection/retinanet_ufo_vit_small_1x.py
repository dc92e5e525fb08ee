# RetinaNet + FPN with a UFO-ViT-S backbone, 1x schedule on COCO, following
# mmdet's retinanet_swin-t-p4-w7_fpn_1x_coco.py: AdamW lr 1e-4, wd 0.05.
#
# Only the stride-8/16/32 maps go to the FPN (P3-P5, extra convs make P6-P7):
# out_indices=(1, 2, 3) builds no stride-4 adapter, so DDP sees no unused
# parameters. ImageNet weights: see mask_rcnn_ufo_vit_small_1x.py.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

pretrained = 'checkpoints/ufo_vit_small_8xb128_in1k.pth'  # noqa

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.UFOViT',
        arch='small',
        img_size=224,
        patch_size=16,
        out_type='featmap',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        in_channels=[384, 384, 384],
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.gamma': dict(decay_mult=0.0),
            '.ls': dict(decay_mult=0.0),
        }))
