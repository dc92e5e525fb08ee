# Demo Semantic FPN with a small UFO-ViT (XNorm) backbone: the SOFT demo
# (fpn_soft_demo_shapes.py) with only the backbone swapped.
_base_ = ['./fpn_soft_demo_shapes.py']

ufo_vit_demo_arch = dict(embed_dims=128, depth=4, num_heads=4)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.UFOViT',
        arch=ufo_vit_demo_arch,
        img_size=64,
        patch_size=8,
        out_type='featmap',
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[128, 128, 128, 128]))
