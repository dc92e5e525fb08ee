# mmseg's Swin UperNet schedule on ADE20K (8 GPUs x 2 images): AdamW lr 6e-5,
# weight decay 0.01, 1500 linear warm-up iterations from 1e-6 x lr, then
# linear decay (poly, power 1) to 0 at 160k iterations. Configs add their
# backbone's `paramwise_cfg`.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
