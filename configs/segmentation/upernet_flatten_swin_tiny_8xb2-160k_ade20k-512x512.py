# UperNet with a FLatten-Swin-T backbone on ADE20K: mmseg's Swin-T recipe
# the FLatten paper follows (512x512 crops, 8 GPUs x 2 images, 160k
# iterations, AdamW 6e-5 / weight decay 0.01 with 1500 warm-up iterations
# and poly decay, auxiliary FCN head on stage 3). Paper: 44.82 mIoU /
# 57.01 mAcc (Swin-T: 44.51 / 55.61).
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'  # noqa: E501
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

# ImageNet weights: the official FLatten-Swin-T checkpoint converted with
# tools/model_converters/flatten2mmlinattn.py (see docs/models/flatten.md).
checkpoint_file = 'checkpoints/flatten_swin_tiny_in1k.pth'
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenSwin',
        arch='tiny',
        attn_type='LLSS',  # linear stages global: no window, no padding
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
