# FLatten-CSwin-S on ImageNet-1k, official recipe (cfgs/flatten_cswin_s.yaml):
# 8 GPUs x 128 -> lr 1e-3, drop path 0.4, EMA 0.99984. Paper: 83.8 top-1.
_base_ = './flatten_cswin_tiny_8xb256_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.4))
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 128 * 8 / 512))
auto_scale_lr = dict(base_batch_size=1024)
