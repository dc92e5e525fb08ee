# UperNet with a UFO-ViT-S backbone on ADE20K, 160k iterations, 512x512
# crops, 8 GPUs x 2 images, following mmseg's Swin UperNet recipe (AdamW
# lr 6e-5, wd 0.01, 1500 warm-up iterations, poly decay). The backbone's
# XCiT-style adapter gives four 384-channel maps at strides 4/8/16/32.
# ImageNet weights: train configs/classification/ufo_vit_small_8xb128_in1k.py
# (no official UFO-ViT weights exist) and set `checkpoint` to the result.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/ade20k_adamw_swin_160k.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

pretrained = 'checkpoints/ufo_vit_small_8xb128_in1k.pth'  # noqa
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='mmlinattn.UFOViT',
        arch='small',
        img_size=224,
        patch_size=16,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.gamma': dict(decay_mult=0.0),
            '.ls': dict(decay_mult=0.0),
        }))

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
