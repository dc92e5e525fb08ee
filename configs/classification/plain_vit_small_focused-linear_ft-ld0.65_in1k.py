# Fine-tuning a DeiT-S skeleton with focused linear attention (FLatten's
# attention in the isotropic PlainViT host) from a pretrained checkpoint,
# with layer-wise learning-rate decay 0.65 (mmpretrain's
# LearningRateDecayOptimWrapperConstructor; every mmlinattn backbone has
# get_layer_depth: stem 0, blocks 1..12, head 13) for 30 epochs, as BEiT /
# MAE fine-tune ViTs. The checkpoint path is a placeholder for your own
# pretrained classifier (e.g. trained with this model and the FLatten recipe).
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    '../_base_/datasets/imagenet_bs64_swin_224_squash.py',
    '../_base_/schedules/imagenet_swin_trainer_300e.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmlinattn.PlainViT',
        arch='deit-small',
        attn_cfg=dict(type='FocusedLinearAttention'),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/plain_vit_small_focused-linear_in1k.pth',
            prefix='backbone.')),
    head=dict(in_channels=384))

optim_wrapper = dict(
    constructor='LearningRateDecayOptimWrapperConstructor',
    optimizer=dict(lr=5e-4 * 64 * 8 / 512),
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.positional_encoding': dict(decay_mult=0.0),
        }),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=5,
        end=30,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
