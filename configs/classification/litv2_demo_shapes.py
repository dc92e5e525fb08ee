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
