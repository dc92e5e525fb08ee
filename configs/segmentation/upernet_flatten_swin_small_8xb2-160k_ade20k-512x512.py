# UperNet with a FLatten-Swin-S backbone on ADE20K (recipe of
# upernet_flatten_swin_tiny_8xb2-160k_ade20k-512x512.py). Paper: 48.14 mIoU
# / 59.31 mAcc (Swin-S: 47.64 / 58.78).
_base_ = './upernet_flatten_swin_tiny_8xb2-160k_ade20k-512x512.py'

checkpoint_file = 'checkpoints/flatten_swin_small_in1k.pth'  # see the docs
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')))
