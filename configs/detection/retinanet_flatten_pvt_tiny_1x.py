# RetinaNet + FPN with a FLatten-PVT-T backbone, COCO 1x (12 epochs, single
# scale 1333x800, 8 GPUs x 2 images), PVT's RetinaNet recipe (AdamW 1e-4,
# weight decay 1e-4). No FLatten paper number for this row (PVT-T: 36.7 AP).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

checkpoint_file = 'checkpoints/flatten_pvt_tiny_in1k.pth'  # see the docs
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenPVT',
        arch='tiny',
        drop_path_rate=0.1,
        # stage 0 runs anyway (it feeds stage 1) but the FPN does not use it
        out_indices=(1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    neck=dict(
        in_channels=[128, 320, 512],
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
