# FLatten-CSwin-B on ImageNet-1k, official recipe (cfgs/flatten_cswin_b.yaml):
# 8 GPUs x 64 -> lr 5e-4, weight decay 0.1, drop path 0.5, EMA 0.99982.
# Paper: 84.5 top-1.
_base_ = './flatten_cswin_tiny_8xb256_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=768))
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 64 * 8 / 512, weight_decay=0.1))
auto_scale_lr = dict(base_batch_size=512)
custom_hooks = [
    dict(type='EMAHook', momentum=1 - 0.99982, priority='ABOVE_NORMAL')
]
