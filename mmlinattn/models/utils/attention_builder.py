# Copyright (c) mmlinattn contributors. All rights reserved.
"""Attention chosen by config, in every host.

The contract of an attention layer (every class in
:mod:`mmlinattn.models.attention`):

* ``__init__(embed_dims, num_heads, ...)``; every other argument has a
  default or is supplied by the host;
* ``forward(x, hw)`` maps (B, H*W, C) tokens on the (H, W) grid ``hw`` to
  (B, H*W, C);
* the class attribute ``host_needs`` names the host facts it cannot work
  without (e.g. ``('window_size',)``).

A host describes itself with keyword facts (the stage's pretraining token
``grid``, ``window_size``, ``shift``, ``sr_ratio``, ``split_size``,
``global_window``, ``qkv_bias``, ``proj_drop``, ``attn_drop``, ...). A layer
receives the facts its constructor accepts, unless the config sets them
itself; a fact in ``host_needs`` that neither provides is an error naming
it.
"""
import inspect
from typing import List, Sequence, Type, Union

import torch.nn as nn

from mmlinattn.registry import MODELS


def attention_class(type_: Union[str, Type[nn.Module]]) -> Type[nn.Module]:
    """The registered attention class for a config ``type``."""
    if isinstance(type_, type):
        return type_
    return MODELS.get(type_)


def build_attention(cfg: dict, embed_dims: int, num_heads: int, host: str,
                    **facts) -> nn.Module:
    """Build ``cfg`` (``dict(type=..., **kwargs)``) for a host block.

    Args:
        cfg: the attention config; its keys win over the host's facts.
        embed_dims, num_heads: of the block.
        host: the host's name, for error messages.
        facts: what the host knows (see the module docstring).
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'attn_cfg must be a dict with a "type" key, got '
                        f'{cfg!r}')
    kwargs = dict(cfg)
    cls = attention_class(kwargs.pop('type'))
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise TypeError(f'{cls.__name__} has no argument(s) {unknown}; '
                        f'valid: {sorted(set(params) - {"self"})}')
    missing = [
        need for need in getattr(cls, 'host_needs', ())
        if need not in kwargs and facts.get(need) is None
    ]
    if missing:
        raise ValueError(
            f'{cls.__name__} needs {missing} from its host, and {host} does '
            f'not provide it (it provides {sorted(facts)}); set '
            f'{missing} in attn_cfg or choose another attention')
    for name, value in facts.items():
        if value is not None and name in params and name not in kwargs:
            kwargs[name] = value
    return cls(embed_dims=embed_dims, num_heads=num_heads, **kwargs)


def parse_attn_type(attn_type: str, depths: Sequence[int]) -> List[List[str]]:
    """Per-block ``'L'`` / ``'S'`` from FLatten's per-stage string.

    One character per stage: ``L`` focused linear attention, ``S`` the
    host's softmax attention, ``M`` the first ``k`` blocks ``L`` and the
    rest ``S``, with ``k`` written after the stage characters (``'LLMS3'``).
    """
    num_stages = len(depths)
    stages, suffix = attn_type[:num_stages], attn_type[num_stages:]
    valid = (
        isinstance(attn_type, str) and len(stages) == num_stages
        and not set(stages) - set('LSM')
        and (suffix.isdigit() if 'M' in stages else suffix == ''))
    if not valid:
        raise ValueError(
            f'attn_type must be {num_stages} characters from L (focused '
            'linear), S (softmax), M (first k blocks L, the rest S) followed '
            f"by k if M is used, e.g. 'LLSS' or 'LLMS3'; got {attn_type!r}")
    k = int(suffix) if suffix else 0
    return [[('L' if j < k else 'S') if c == 'M' else c for j in range(d)]
            for c, d in zip(stages, depths)]


def per_block_attn_cfgs(attn_cfg: Union[None, dict, Sequence[dict]],
                        default: Sequence[Union[dict, Sequence[dict]]],
                        depths: Sequence[int]) -> List[List[dict]]:
    """One attention config per block of every stage.

    ``default`` (the paper's settings) holds, per stage, one dict for all its
    blocks or one dict per block. ``attn_cfg`` overrides it: ``None`` keeps
    the defaults, one dict applies to every block, a list gives one dict per
    stage.
    """
    if attn_cfg is not None:
        if isinstance(attn_cfg, dict):
            attn_cfg = [attn_cfg] * len(depths)
        default = list(attn_cfg)
        if len(default) != len(depths):
            raise ValueError(f'attn_cfg needs one dict per stage '
                             f'({len(depths)}), got {len(default)}')
    return [[dict(cfg) for _ in range(depth)]
            if isinstance(cfg, dict) else [dict(c) for c in cfg]
            for cfg, depth in zip(default, depths)]


def flatten_attn_cfgs(attn_cfg: Union[None, dict, Sequence[dict]],
                      attn_type: str, depths: Sequence[int], softmax: dict,
                      **linear) -> List[List[dict]]:
    """Per-block configs of a FLatten host: focused linear attention
    (``linear`` arguments) for the ``L`` blocks of ``attn_type`` (see
    :func:`parse_attn_type`), the host's ``softmax`` config for the ``S``
    blocks; ``attn_cfg`` overrides both (see :func:`per_block_attn_cfgs`).
    """
    linear = dict(type='FocusedLinearAttention', **linear)
    return per_block_attn_cfgs(
        attn_cfg, [[linear if kind == 'L' else softmax for kind in kinds]
                   for kinds in parse_attn_type(attn_type, depths)], depths)


def head_dims(embed_dims: int, num_heads: int) -> int:
    """Channels per head; a clear error when the heads do not divide the
    width (every attention layer checks this at construction)."""
    if num_heads < 1 or embed_dims % num_heads:
        raise ValueError(
            f'embed_dims {embed_dims} is not divisible by num_heads '
            f'{num_heads}: choose num_heads dividing embed_dims')
    return embed_dims // num_heads
