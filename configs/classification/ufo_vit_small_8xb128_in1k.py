# UFO-ViT-S (our XCiT-S12-sized variant; the paper's sizes are unknown, see
# docs/models/ufo_vit.md) on ImageNet-1k with the DeiT recipe the paper
# names: AdamW lr 5e-4 x bs/512 (1e-3 at 1024), wd 0.05, 300 epochs, cosine
# with 20 warm-up epochs (schedule base), RandAugment + random erasing
# (dataset base), Mixup 0.8 / CutMix 1.0, label smoothing 0.1.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmlinattn.UFOViT',
        arch='small',
        img_size=224,
        patch_size=16,
        out_type='cls_token',
        # XCiT's stochastic depth for this size (S12: 0.05)
        drop_path_rate=0.05),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# 8 GPUs x 128 images = 1024, the batch the schedule base is written for
train_dataloader = dict(batch_size=128)

optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0),
            # XNorm gammas (gamma, gamma_q, gamma_kv) and LayerScale
            '.gamma': dict(decay_mult=0.0),
            '.ls': dict(decay_mult=0.0),
        }),
    clip_grad=dict(max_norm=5.0))
