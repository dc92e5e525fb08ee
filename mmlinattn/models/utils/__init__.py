# Copyright (c) mmlinattn contributors. All rights reserved.
from .attention_builder import (attention_class, build_attention,
                                flatten_attn_cfgs, head_dims, parse_attn_type,
                                per_block_attn_cfgs)
from .base_backbone import LinAttnBackbone, Stage
from .blocks import TransformerBlock
from .embed import ConvPatchEmbed
from .ffn import DWConv, Mlp, untiled_mlp
from .gemm import Linear, blas_gemm
from .layout import nchw_as_tokens, tokens_as_nchw, tokens_to_nchw
from .misc import (build_drop_path, checkpoint_call,
                   hand_written_backward_applies)
from .pos_embed import resize_grid_table_on_load, resize_pos_embed
from .precision import autocast_off, run_in_float32
from .weight_init import (drop_path_schedule, init_conv_fan_out,
                          init_linear_and_norm)
from .window import (pad_to_multiple, padding_key_mask, region_mask,
                     spatial_reduction, window_partition, window_reverse)

__all__ = [
    'attention_class', 'build_attention', 'flatten_attn_cfgs', 'head_dims',
    'parse_attn_type', 'per_block_attn_cfgs', 'LinAttnBackbone', 'Stage',
    'tokens_to_nchw', 'tokens_as_nchw', 'nchw_as_tokens', 'TransformerBlock', 'ConvPatchEmbed', 'DWConv', 'Mlp',
    'untiled_mlp', 'Linear', 'blas_gemm',
    'build_drop_path', 'checkpoint_call', 'hand_written_backward_applies',
    'resize_grid_table_on_load',
    'resize_pos_embed', 'autocast_off', 'run_in_float32', 'drop_path_schedule',
    'init_conv_fan_out', 'init_linear_and_norm', 'pad_to_multiple',
    'padding_key_mask', 'region_mask', 'spatial_reduction', 'window_partition',
    'window_reverse'
]
