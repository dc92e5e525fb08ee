# FLatten-PVTv2-B3 on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_pvt_v2_b3.yaml, 8 GPUs x 128).
_base_ = './flatten_pvt_tiny_8xb128_in1k.py'

model = dict(
    backbone=dict(
        type='mmlinattn.FLattenPVTv2', arch='b3', drop_path_rate=0.3),
    head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 128 * 8 / 512), clip_grad=dict(max_norm=1.0))
auto_scale_lr = dict(base_batch_size=1024)
