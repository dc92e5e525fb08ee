# FLatten-Swin-T on ImageNet-1k with the official recipe
# (LeapLabTHU/FLatten-Transformer cfgs/flatten_swin_t.yaml + config.py
# defaults, 8 GPUs x 128). FLatten-Swin-S / -B / -B-384 inherit from this
# file. Paper: 82.1 top-1 (official log 82.106 / 95.900).
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    '../_base_/datasets/imagenet_bs64_swin_224_squash.py',
    '../_base_/schedules/imagenet_swin_trainer_300e.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmlinattn.FLattenSwin',
        arch='tiny',
        attn_type='LLSS',  # global focused linear attention in stages 1-2
        focusing_factor=3,
        kernel_size=5,
        drop_path_rate=0.2),
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=128)

# yaml BASE_LR 5e-4 per 512 images -> 1e-3 for 8 x 128; the schedule is the
# trainer's default. No weight decay on relative-bias tables either (Swin's
# skip list). Gradient norm clipped at 5.
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 128 * 8 / 512),
    paramwise_cfg=dict(
        custom_keys={'.relative_position_bias_table': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
