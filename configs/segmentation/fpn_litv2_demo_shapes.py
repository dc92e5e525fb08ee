# Demo Semantic FPN with a small LITv2 (HiLo) backbone: the SOFT demo
# (fpn_soft_demo_shapes.py) with only the backbone swapped.
_base_ = ['./fpn_soft_demo_shapes.py']

litv2_demo_arch = dict(
    embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch=litv2_demo_arch,
        drop_path_rate=0.,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[32, 64, 128, 256]))
# The official recipe: DTM's offset-conv weights learn at 0.01x the lr.
# Without it the demo classifier collapsed to chance (loss ln 4) once the
# offsets moved (README, "What the demo shows"); here too, as there.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'.conv_offset.weight': dict(lr_mult=0.01)}))
