# UperNet, SOFT-Medium-Norm backbone, ADE20K 512x512: README 48.0 mIoU
# (76M). Recipe as upernet_soft_small_norm_8xb2-160k_ade20k-512x512.py.
_base_ = './upernet_soft_small_norm_8xb2-160k_ade20k-512x512.py'

checkpoint = 'checkpoints/soft_medium_norm_in1k_backbone.pth'
model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 288, 512]),
    auxiliary_head=dict(in_channels=288))
