# mmdet's Swin Transformer detection schedule, COCO 1x (8 GPUs x 2 images):
# AdamW lr 1e-4, weight decay 0.05, 1000 linear warm-up iterations, 12
# epochs with steps at 8 and 11. Configs add their backbone's
# `paramwise_cfg`; a 3x config changes `max_epochs` and the steps.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
