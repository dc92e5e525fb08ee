# Copyright (c) mmlinattn contributors. All rights reserved.
from .base_backbone import LinAttnBackbone, tokens_to_nchw
from .embed import ConvPatchEmbed
from .ffn import DWConv, Mlp
from .misc import build_drop_path, checkpoint_call
from .pos_embed import resize_pos_embed

__all__ = [
    'LinAttnBackbone', 'tokens_to_nchw', 'ConvPatchEmbed', 'DWConv', 'Mlp',
    'build_drop_path', 'checkpoint_call', 'resize_pos_embed'
]
