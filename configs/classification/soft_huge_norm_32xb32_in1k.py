# SOFT-Huge-Norm (config/SOFT_Huge_norm.yaml, no released checkpoint):
# SOFT-Huge's recipe (lr 2.7e-4 per 1024 images, 32 GPUs x 32 images) with
# the symmetric normalisation.
_base_ = './soft_huge_32xb32_in1k.py'

model = dict(backbone=dict(sym_norm=True))
