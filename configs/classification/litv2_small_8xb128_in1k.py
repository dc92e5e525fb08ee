# LITv2-S on ImageNet-1k: the official recipe (ziplab/LITv2
# classification/configs/litv2-small.yaml on top of its Swin-style trainer):
# 300 epochs, 8 GPUs x 128 images, AdamW lr 5e-4 per 512 images (1e-3 here),
# weight decay 0.05 except norms/biases, 20 warm-up epochs, cosine to 1e-5,
# grad-norm clip 5, RandAugment + Mixup/CutMix + random erasing + label
# smoothing 0.1, and 0.01x lr on the DTM offset conv weights.
# The official run used apex AMP O1: add --amp to tools/train.py for it.
# Evaluate converted official weights (README top-1 82.0) with
#   python tools/model_converters/litv22mmlinattn.py litv2_s.pth \
#       checkpoints/litv2_small_in1k.pth
#   python tools/test.py configs/classification/litv2_small_8xb128_in1k.py \
#       checkpoints/litv2_small_in1k.pth
_base_ = [
    '../_base_/models/in1k_linear_cls.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmlinattn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmlinattn.LITv2',
        arch='small',
        alpha=0.9,
        local_ws=(0, 0, 2, 1),
        drop_path_rate=0.2,
        out_indices=(3, )),
    # no head init: the classifier-level init below, as upstream
    head=dict(in_channels=768, init_cfg=None),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ])

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    # Upstream: every 1-D parameter and bias without weight decay; only the
    # 4-D offset-conv weights get the 0.01x lr (their biases are 1-D).
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={'.conv_offset.weight': dict(lr_mult=0.01)}),
    clip_grad=dict(max_norm=5.0))
