# SOFT-Tiny-Norm (config/SOFT_Tiny_norm.yaml): SOFT-Tiny's recipe with the
# symmetric normalisation; Newton-Schulz variant 'b' (batch-global step
# size, the official default for SOFT-Norm).
_base_ = './soft_tiny_8xb128_in1k.py'

model = dict(backbone=dict(sym_norm=True))
