# FLatten-PVT-M on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_pvt_m.yaml, 8 GPUs x 64).
_base_ = './flatten_pvt_tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(
        type='mmlinattn.FLattenPVT', arch='medium', drop_path_rate=0.3),
    head=dict(in_channels=512))
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 64 * 8 / 512), clip_grad=dict(max_norm=1.0))
auto_scale_lr = dict(base_batch_size=512)
