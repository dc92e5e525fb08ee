# The ImageNet-1k classifier around the backbone, as the official timm-based
# trainers of FLatten (Swin, CSwin, PVT), LITv2 and SOFT build it: a linear
# head over 1000 classes with label smoothing 0.1 and a truncated-normal
# init, Mixup 0.8 / CutMix 1.0 switching with probability 0.5. Configs add
# the backbone and the head's `in_channels`; a backbone that pools itself
# (cls token) sets `neck=None`. (UFO-ViT's DeiT head has no bias init and no
# `cal_acc` key, so its config states its own classifier.)
model = dict(
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
