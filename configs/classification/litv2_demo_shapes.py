# Demo classifier with a small LITv2 (HiLo) backbone: the SOFT demo
# (soft_demo_shapes.py) with only the backbone swapped: channels
# 32/64/128/256, head dim 32 as in LITv2.
_base_ = ['./soft_demo_shapes.py']

litv2_demo_arch = dict(
    embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.LITv2',
        arch=litv2_demo_arch,
        drop_path_rate=0.,
        out_indices=(3, )),
    head=dict(in_channels=256))
# The official recipe: DTM's offset-conv weights learn at 0.01x the lr.
# Without it this small classifier collapsed to chance (loss ln 4) once
# the offsets moved (README, "What the demo shows").
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'.conv_offset.weight': dict(lr_mult=0.01)}))
