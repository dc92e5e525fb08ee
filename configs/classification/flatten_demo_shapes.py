# Demo classifier with a small FLatten-PVTv2 backbone: the SOFT demo
# (soft_demo_shapes.py) with only the backbone swapped (same channels as the
# SOFT demo backbone).
_base_ = ['./soft_demo_shapes.py']

flatten_demo_arch = dict(
    embed_dims=[32, 64, 128, 128],
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 4],
    mlp_ratios=[4, 4, 4, 4])
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.FLattenPVTv2',
        arch=flatten_demo_arch,
        pretrain_img_size=64,
        drop_path_rate=0.,
        out_indices=(3, )))
