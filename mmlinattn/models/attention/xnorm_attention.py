# Copyright (c) mmlinattn contributors. All rights reserved.
"""XNorm attention of UFO-ViT / X-ViT.

Song, "UFO-ViT: High Performance Linear Vision Transformer without Softmax",
arXiv:2109.14382 (re-titled "X-ViT", Song & Lee, arXiv:2205.13805).

The softmax of self-attention is replaced by an l2 normalisation ("XNorm")
so that the product can be taken key-value first::

    A(x) = XNorm(Q) @ XNorm(K^T V),   XNorm(a) = gamma * a / ||a||_2

which costs O(N d^2) per head instead of O(N^2 d). There is no official code;
every choice the paper leaves open is an argument here (see
``docs/models/ufo_vit.md``).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmlinattn.registry import register_model
from ..utils import Linear, run_in_float32

GAMMA_MODES = ('shared', 'separate')
KV_NORM_AXES = (-1, -2)
GAMMA_INITS = ('ones', 'randn')


def xnorm(x: torch.Tensor,
          gamma: torch.Tensor,
          dim: int = -1,
          eps: float = 1e-6) -> torch.Tensor:
    """``x * gamma / max(||x||_2 along dim, eps)``.

    ``eps=0`` is the unguarded form of the third-party code: an all-zero
    vector gives NaN.
    """
    norm = torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True)
    return x * gamma / norm.clamp_min(eps)


@register_model()
class XNormAttention(BaseModule):
    """Multi-head XNorm attention of UFO-ViT (linear in the token count).

    Per head ``h``: ``Q, K`` (N, d_k), ``V`` (N, d_v); ``KV = K^T V``
    (d_k, d_v); output ``XNorm(Q; gamma_q) @ XNorm(KV; gamma_kv)`` followed by
    the output projection. There is no ``1/sqrt(d)`` scale, no attention
    dropout and no softmax.

    Args:
        embed_dims: input and output width C.
        num_heads: number of heads h.
        qkv_bias: bias of the q/k/v projections.
        gamma_mode: ``'separate'`` learns ``gamma_q`` and ``gamma_kv`` (one
            value per head each); ``'shared'`` uses one per-head gamma for
            both norms, as the third-party module does (the output then
            scales with gamma^2 and ignores gamma's sign). Default
            ``'separate'`` (``'shared'`` with ``compat``).
        kv_norm_axis: axis of ``K^T V`` (shape d_k x d_v) that XNorm
            normalises: ``-1`` normalises each row over d_v (third-party
            code), ``-2`` each column over d_k.
        eps: lower bound of the l2 norms (NaN guard). Default ``1e-6``
            (``0``, i.e. unguarded, with ``compat``).
        head_dims: ``None`` for ``d_k = d_v = embed_dims // num_heads``, an
            int for ``d_k = d_v``, or a pair ``(d_k, d_v)``.
        gamma_init: ``'ones'`` (default) or ``'randn'`` (``compat``).
        proj_drop: dropout after the output projection.
        compat: use the defaults of the third-party ``UFOAttention`` of
            External-Attention-pytorch (shared gamma, row-wise norm of
            ``K^T V``, no eps, ``randn`` gamma, Linear init normal(0, 0.001)
            with zero bias, separate q/k/v matmuls), which it then reproduces
            bit for bit; explicitly passed arguments still win.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int = 8,
                 qkv_bias: bool = True,
                 gamma_mode: Optional[str] = None,
                 kv_norm_axis: int = -1,
                 eps: Optional[float] = None,
                 head_dims: Union[None, int, Sequence[int]] = None,
                 gamma_init: Optional[str] = None,
                 proj_drop: float = 0.,
                 compat: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        gamma_mode = gamma_mode or ('shared' if compat else 'separate')
        gamma_init = gamma_init or ('randn' if compat else 'ones')
        eps = (0. if compat else 1e-6) if eps is None else float(eps)
        if gamma_mode not in GAMMA_MODES:
            raise ValueError(f'gamma_mode must be one of {GAMMA_MODES}, got '
                             f'{gamma_mode!r}')
        if kv_norm_axis not in KV_NORM_AXES:
            raise ValueError(f'kv_norm_axis must be one of {KV_NORM_AXES} '
                             '(-1: rows of K^T V over d_v, -2: columns over '
                             f'd_k), got {kv_norm_axis!r}')
        if gamma_init not in GAMMA_INITS:
            raise ValueError(f'gamma_init must be one of {GAMMA_INITS}, got '
                             f'{gamma_init!r}')
        if eps < 0:
            raise ValueError(f'eps must be >= 0, got {eps}')
        if num_heads < 1:
            raise ValueError(f'num_heads must be >= 1, got {num_heads}')
        if head_dims is None:
            if embed_dims % num_heads:
                raise ValueError(
                    f'embed_dims {embed_dims} is not divisible by num_heads '
                    f'{num_heads}: choose num_heads dividing embed_dims, or '
                    'set head_dims explicitly')
            head_dims = embed_dims // num_heads
        key_dims, value_dims = ((head_dims, head_dims) if isinstance(
            head_dims, int) else tuple(head_dims))

        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.key_dims = key_dims
        self.value_dims = value_dims
        self.gamma_mode = gamma_mode
        self.kv_norm_axis = kv_norm_axis
        self.eps = eps
        self.gamma_init = gamma_init
        self.compat = compat

        self.qkv = Linear(
            embed_dims, num_heads * (2 * key_dims + value_dims), bias=qkv_bias)
        self.proj = Linear(num_heads * value_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        if gamma_mode == 'shared':
            self.gamma = nn.Parameter(torch.empty(1, num_heads, 1, 1))
        else:
            self.gamma_q = nn.Parameter(torch.empty(1, num_heads, 1, 1))
            self.gamma_kv = nn.Parameter(torch.empty(1, num_heads, 1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Apply this layer's own initialisation (done at construction)."""
        for linear in (self.qkv, self.proj):
            if self.compat:
                nn.init.normal_(linear.weight, std=0.001)
            else:
                nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        for gamma in self._gammas():
            if self.gamma_init == 'ones':
                nn.init.ones_(gamma)
            else:
                nn.init.normal_(gamma)

    def _gammas(self) -> Tuple[nn.Parameter, ...]:
        if self.gamma_mode == 'shared':
            return (self.gamma, )
        return (self.gamma_q, self.gamma_kv)

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, head_dims=({self.key_dims}, '
                f'{self.value_dims}), gamma_mode={self.gamma_mode!r}, '
                f'kv_norm_axis={self.kv_norm_axis}, eps={self.eps}')

    def _project(
        self, query: torch.Tensor, key: Optional[torch.Tensor],
        value: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hk = self.num_heads * self.key_dims
        hv = self.num_heads * self.value_dims
        if key is None and value is None and not self.compat:
            return self.qkv(query).split([hk, hk, hv], dim=-1)
        key = query if key is None else key
        value = key if value is None else value
        weights = self.qkv.weight.split([hk, hk, hv])
        biases = ((None, None, None) if self.qkv.bias is None else
                  self.qkv.bias.split([hk, hk, hv]))
        return tuple(
            F.linear(x, w, b)
            for x, w, b in zip((query, key, value), weights, biases))

    def forward(self,
                query: torch.Tensor,
                hw: Optional[Tuple[int, int]] = None,
                key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N_q, C) queries [, (B, N_k, C) keys [, values]] -> (B, N_q, C).

        Self-attention when ``key`` and ``value`` are omitted; ``value``
        defaults to ``key``. XNorm attention is permutation-invariant over
        the keys, so the token grid ``hw`` of the attention contract is not
        needed.
        """
        B, Nq, _ = query.shape
        q, k, v = self._project(query, key, value)
        h = self.num_heads
        q = q.reshape(B, Nq, h, self.key_dims).transpose(1, 2)
        k = k.reshape(B, -1, h, self.key_dims).transpose(1, 2)
        v = v.reshape(B, -1, h, self.value_dims).transpose(1, 2)
        out = self._xnorm_core(q, k, v)
        out = out.transpose(1, 2).reshape(B, Nq, h * self.value_dims)
        return self.proj_drop(self.proj(out))

    def _xnorm_core(self, q: torch.Tensor, k: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
        """XNorm(Q) @ XNorm(K^T V) per head, in at least fp32.

        Half precision is upcast: K^T V sums over all tokens and the norms
        divide by small numbers, both of which overflow in fp16.
        """
        gamma_q, gamma_kv = ((self.gamma,
                              self.gamma) if self.gamma_mode == 'shared' else
                             (self.gamma_q, self.gamma_kv))
        return run_in_float32(self._xnorm_product, q, k, v, gamma_q, gamma_kv)

    def _xnorm_product(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       gamma_q: torch.Tensor,
                       gamma_kv: torch.Tensor) -> torch.Tensor:
        kv = torch.matmul(k.transpose(-2, -1), v)  # (B, h, d_k, d_v)
        kv = xnorm(kv, gamma_kv, self.kv_norm_axis, self.eps)
        if self.compat:  # the reference's order, bit for bit
            return torch.matmul(xnorm(q, gamma_q, -1, self.eps), kv)
        # XNorm(Q) KV = diag(gamma / ||q_i||) (Q KV): scaling the rows of the
        # (N, d_v) product saves writing a normalised copy of Q (1.1-1.4x
        # faster forward at 200x334 on CPU, docs/benchmarks.md)
        q_norm = torch.linalg.vector_norm(q, 2, dim=-1, keepdim=True)
        return torch.matmul(q, kv) * (gamma_q / q_norm.clamp_min(self.eps))


def xnorm_attention_from_third_party(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keys of a third-party ``UFOAttention`` (``fc_q``, ``fc_k``, ``fc_v``,
    ``fc_o``, ``gamma``) -> :class:`XNormAttention` with ``compat=True``
    (``head_dims=(d_k, d_v)``). Other prefixes are kept, e.g.
    ``blocks.0.fc_q.weight`` -> ``blocks.0.qkv.weight``."""
    out: Dict[str, torch.Tensor] = {}
    grouped: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        prefix, _, leaf = name.rpartition('.')
        module_prefix, _, module = prefix.rpartition('.')
        base = module_prefix + '.' if module_prefix else ''
        if module in ('fc_q', 'fc_k', 'fc_v'):
            grouped.setdefault((base, leaf), {})[module] = tensor
        elif module == 'fc_o':
            out[f'{base}proj.{leaf}'] = tensor
        else:
            out[name] = tensor
    for (base, leaf), parts in grouped.items():
        if set(parts) != {'fc_q', 'fc_k', 'fc_v'}:
            raise KeyError(f'{base}{leaf}: need fc_q, fc_k and fc_v, found '
                           f'{sorted(parts)}')
        out[f'{base}qkv.{leaf}'] = torch.cat(
            [parts['fc_q'], parts['fc_k'], parts['fc_v']])
    return out


def xnorm_attention_to_third_party(state_dict: Dict[str, torch.Tensor],
                                   key_dims: int, value_dims: int,
                                   num_heads: int) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`xnorm_attention_from_third_party` (shared gamma)."""
    hk, hv = num_heads * key_dims, num_heads * value_dims
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        prefix, _, leaf = name.rpartition('.')
        module_prefix, _, module = prefix.rpartition('.')
        base = module_prefix + '.' if module_prefix else ''
        if module == 'qkv':
            for part, chunk in zip(('fc_q', 'fc_k', 'fc_v'),
                                   tensor.split([hk, hk, hv])):
                out[f'{base}{part}.{leaf}'] = chunk.clone()
        elif module == 'proj':
            out[f'{base}fc_o.{leaf}'] = tensor
        elif leaf in ('gamma_q', 'gamma_kv'):
            raise KeyError(f'{name}: the third-party module has one shared '
                           "gamma; only gamma_mode='shared' converts")
        else:
            out[name] = tensor
    return out
