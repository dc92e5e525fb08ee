# Demo classifier with a small UFO-ViT (XNorm) backbone: the SOFT demo
# (soft_demo_shapes.py) with only the backbone swapped: isotropic, 128
# channels at every stride.
_base_ = ['./soft_demo_shapes.py']

ufo_vit_demo_arch = dict(embed_dims=128, depth=4, num_heads=4)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmlinattn.UFOViT',
        arch=ufo_vit_demo_arch,
        img_size=64,
        patch_size=8,
        out_type='featmap',
        out_indices=(3, )))
