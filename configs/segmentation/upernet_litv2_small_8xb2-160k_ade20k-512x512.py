# UperNet with LITv2-S on ADE20K. Not in the paper (no official result): the
# mmseg Swin-T UperNet recipe (AdamW lr 6e-5, weight decay 0.01 except
# norms, 1500 warm-up iterations, linear decay, 160k iterations, 8 GPUs x 2
# images) with the LITv2-S backbone in its segmentation form (norm0..3).
# ImageNet weights: tools/model_converters/litv22mmlinattn.py litv2_s.pth
#   checkpoints/litv2_small_in1k_backbone.pth --to seg
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/ade20k_adamw_swin_160k.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch='small',
        alpha=0.9,
        local_ws=(0, 0, 2, 1),
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        with_stage0_norm=True,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/litv2_small_in1k_backbone.pth',
            prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
