# ImageNet-1k at 224 as the official FLatten code (Swin's data pipeline)
# trains and evaluates it. Training augmentation = mmpretrain's Swin base
# (bicubic random-resized crop, flip, RandAugment m9-mstd0.5-inc, random
# erasing 0.25). Evaluation: squash to 256x256 (aspect ratio NOT kept),
# centre-crop 224, bicubic, PIL decoding; a shorter-side resize changes
# Acc@1.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(
        type='Resize',
        scale=(256, 256),
        keep_ratio=False,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
