# UFO-ViT-T (XCiT-T12-sized, our choice; see docs/models/ufo_vit.md) on
# ImageNet-1k with the DeiT recipe of ufo_vit_small_8xb128_in1k.py.
_base_ = './ufo_vit_small_8xb128_in1k.py'

model = dict(
    # XCiT's stochastic depth for this size
    backbone=dict(arch='tiny', drop_path_rate=0.0),
    head=dict(in_channels=192))
