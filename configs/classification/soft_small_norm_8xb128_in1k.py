# SOFT-Small-Norm (config/SOFT_Small_norm.yaml). Check the depth of the
# released checkpoint with tools/model_converters/soft2mmlinattn.py.
_base_ = './soft_small_8xb128_in1k.py'

model = dict(backbone=dict(sym_norm=True))
