# Copyright (c) mmlinattn contributors. All rights reserved.
"""Softmax-free attention of SOFT and SOFT-Norm.

SOFT: Softmax-free Transformer with Linear Complexity (Lu et al., NeurIPS
2021, arXiv:2110.11945) and Softmax-free Linear Transformers (Lu et al.,
IJCV 2024, arXiv:2207.03341, "SOFT-Norm").

The attention replaces ``softmax(QK^T)`` by a Gaussian kernel
``exp(-||q - k||^2 / 2)`` over a shared projection (K = Q), approximated
through ``m`` landmarks L (Nystrom): ``P A^+ P^T`` with ``P = k(Q, L)``,
``A = k(L, L)`` and ``A^+`` from a Newton-Schulz iteration.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mmlinattn.ops import (gaussian_kernel, gaussian_kernel_matmul,
                           gaussian_kernel_t_matmul, newton_schulz_steps,
                           ops_backend)
from mmlinattn.registry import register_model
from ..utils import (Linear, head_dims, nchw_as_tokens, run_in_float32,
                     tokens_as_nchw)

NEWTON_VARIANTS = ('a', 'b', 'b_per_matrix')
KERNEL_METHODS = ('expand', 'exact')
KERNEL_IMPLS = ('auto', 'reference', 'fused')


# --------------------------------------------------------- Newton-Schulz
def newton_steps_reference(inv: torch.Tensor, mat: torch.Tensor,
                           num_iter: int) -> torch.Tensor:
    """The official formulation of :func:`~mmlinattn.ops.newton_schulz_steps`,
    ``V <- 2V - V A V`` as written (tests and benchmarks)."""
    for _ in range(num_iter):
        inv = 2 * inv - inv @ mat @ inv
    return inv


def _newton_regularized(mat: torch.Tensor, num_iter: int) -> torch.Tensor:
    """Variant (a): per-matrix step size, ``A + 0.01 I``."""
    eye = torch.eye(mat.size(-1), device=mat.device, dtype=mat.dtype)
    alpha = 0.9 * 2 / mat.sum(-1).amax(-1)**2
    reg = mat + 0.01 * eye
    return newton_schulz_steps(alpha[..., None, None] * reg, reg, num_iter)


class _RegularizedNewtonInverse(torch.autograd.Function):
    """Variant (a) with the analytic inverse gradient
    ``dA = -inv^T G inv^T`` (the iterations are not differentiated). Its
    FLOP handle for mmengine's analysis is in :mod:`mmlinattn.utils.flops`.
    """

    @staticmethod
    def forward(ctx, mat: torch.Tensor, num_iter: int) -> torch.Tensor:
        inv = _newton_regularized(mat, num_iter)
        ctx.save_for_backward(inv)
        return inv

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        inv_t = ctx.saved_tensors[0].transpose(-1, -2)
        return -(inv_t @ grad @ inv_t), None


def _newton_backoff(mat: torch.Tensor, num_iter: int,
                    per_matrix: bool) -> torch.Tensor:
    """Variants (b): step size ``2 / max_rowsum^2`` halved (at most 10
    times) while ``max colsum |I - A V0| > 1.01``; differentiable by
    autograd through all iterations."""
    eye = torch.eye(mat.size(-1), device=mat.device, dtype=mat.dtype)
    row_sums = mat.sum(-1)
    if per_matrix:
        alpha = 2 / row_sums.amax(-1)[..., None, None]**2
    else:  # one scalar for the whole batch and all heads (official)
        alpha = 2 / row_sums.max()**2

    def residual(inv: torch.Tensor) -> torch.Tensor:
        col_sums = (eye - mat @ inv).abs().sum(-2)
        if per_matrix:
            return col_sums.amax(-1)[..., None, None]
        return col_sums.max()

    inv = alpha * mat
    # Eager stops once no step size is too large. A compiled graph cannot
    # branch on a tensor (graph break), so it runs all 10 rounds: after the
    # early exit a round changes nothing (alpha, hence inv and the residual,
    # stay as they are), so both give identical values.
    compiling = torch.compiler.is_compiling()
    for _ in range(10):
        too_large = residual(inv) > 1.01
        if not compiling and not bool(too_large.any()):
            break
        alpha = torch.where(too_large, alpha * 0.5, alpha)
        inv = alpha * mat
    return newton_schulz_steps(inv, mat, num_iter)


def newton_schulz_inverse(mat: torch.Tensor,
                          num_iter: int = 20,
                          variant: str = 'a') -> torch.Tensor:
    """Approximate inverse of the landmark kernels ``mat`` (..., m, m).

    Variants of the official code (``V <- 2V - V A V``, ``num_iter`` steps):

    - ``'a'``: SOFT (current official master): per-matrix
      ``alpha = 1.8 / max_rowsum^2``, iterates on ``A + 0.01 I`` (so it
      converges to ``(A + 0.01 I)^-1``), analytic backward.
    - ``'b'``: SOFT-Norm and the NeurIPS-2021 code: one ``alpha`` for the
      whole batch with halving back-off, converges to ``A^+``, autograd
      through the iterations. The result of one image depends on the others
      in the batch.
    - ``'b_per_matrix'``: ``'b'`` with ``alpha`` and back-off per matrix:
      batch-independent; equal to ``'b'`` for a single image with one head.
    """
    if variant == 'a':
        return _RegularizedNewtonInverse.apply(mat, num_iter)
    if variant in ('b', 'b_per_matrix'):
        return _newton_backoff(mat, num_iter, variant == 'b_per_matrix')
    raise ValueError(f'newton variant must be one of {NEWTON_VARIANTS}, '
                     f'got {variant!r}')


# ------------------------------------------------------------ attention
def softmax_free_attention(query: torch.Tensor,
                           landmarks: torch.Tensor,
                           value: torch.Tensor,
                           sym_norm: bool = False,
                           newton_variant: str = 'a',
                           newton_iter: int = 20,
                           kernel_method: str = 'expand',
                           fused: bool = False) -> torch.Tensor:
    """``P A^+ P^T V`` with ``P = k(query, landmarks)``,
    ``A = k(landmarks, landmarks)``, ``k(a, b) = exp(-||a - b||^2 / 2)``.

    Args:
        query: (B, h, N, d), already scaled by ``d ** -0.25``.
        landmarks: (B, h, m, d).
        value: (B, h, N, d).
        sym_norm: SOFT-Norm: ``A^+ <- D^-1/2 A^+ D^-1/2`` with
            ``D = diag(A 1)``.
        newton_variant: see :func:`newton_schulz_inverse`.
        kernel_method: ``'expand'`` (``|q|^2 + |k|^2 - 2 q.k``, the official
            torch path) or ``'exact'`` (difference form, the official CUDA
            path). The fused path always uses its own exact kernel.
        fused: compute ``P (A^+ (P^T V))`` with the memory-linear
            ``gaussian_kernel_(t_)matmul`` ops instead of the official
            ``(P A^+) (P^T V)`` on a materialised N x m kernel.
    """
    kernel_ll = gaussian_kernel(landmarks, landmarks, method=kernel_method)
    inv = newton_schulz_inverse(kernel_ll, newton_iter, newton_variant)
    if sym_norm:
        degree = 1 / kernel_ll.sum(-1, keepdim=True).sqrt()
        inv = degree * inv * degree.transpose(-1, -2)
    if fused:
        context = gaussian_kernel_t_matmul(query, landmarks, value)
        return gaussian_kernel_matmul(query, landmarks, inv @ context)
    kernel_ql = gaussian_kernel(query, landmarks, method=kernel_method)
    return (kernel_ql @ inv) @ (kernel_ql.transpose(-1, -2) @ value)


@register_model()
class SoftmaxFreeAttention(nn.Module):
    """Softmax-free (SOFT / SOFT-Norm) self-attention on a token grid.

    ``Q = W_q x`` (no key projection, K = Q), scaled by ``d ** -0.25``;
    landmarks ``L = GELU(LN(Conv_{r x r, stride r}(Q)))`` with the conv and
    LayerNorm shared by all heads; output
    ``proj(P A^+ P^T V + DWConv_k(V))`` where the depthwise conv has one
    ``k x k`` filter per head shared by that head's channels.

    Args:
        embed_dims: channels C.
        num_heads: heads h (head dim C / h, 32 in every SOFT model).
        sr_ratio: landmark conv kernel and stride r; ``m = (H//r)(W//r)``.
            ``None``: from the host's pretraining ``grid``, the stride that
            leaves about 7 x 7 landmarks (SOFT's choice in every stage).
        conv_size: kernel of the local depthwise conv on V (9/5/3 in
            stages 1-3 of SOFT); 0 disables it.
        sym_norm: SOFT-Norm symmetric normalisation of ``A^+``.
        newton_variant: ``'a'``, ``'b'`` or ``'b_per_matrix'`` (see
            :func:`newton_schulz_inverse`); ``None`` picks the official one:
            ``'b'`` with ``sym_norm`` else ``'a'``.
        newton_iter: Newton-Schulz iterations.
        kernel_method: ``'expand'`` (official torch path, used by most
            released checkpoints) or ``'exact'`` (official CUDA path).
        kernel_impl: ``'reference'`` = official association order
            ``(P A^+)(P^T V)`` on a materialised N x m kernel;
            ``'fused'`` = ``P (A^+ (P^T V))`` through the memory-linear
            ``mmlinattn.ops`` products (exact kernel); ``'auto'`` = fused
            when the compiled op is available for the input's device and
            the landmarks outnumber ``2 * head_dims`` (then the N x m kernel
            dominates memory; with few landmarks, e.g. m = 49 at 224, the
            materialised path is faster, see docs/ops.md).
        max_landmarks: optional cap on m for large inputs: the query grid is
            adaptively average-pooled so that the strided conv yields at most
            this many landmarks (aspect ratio kept). Parameter-free, so
            checkpoints are unaffected; ``None`` keeps the official rule.
        qkv_bias: bias of the Q and V projections.
        grid: the host stage's pretraining token grid (a host fact).

    The kernels, the Newton-Schulz inverse and the products run in at least
    fp32 (fp64 for fp64 inputs), also under autocast.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: Optional[int] = None,
                 conv_size: int = 3,
                 sym_norm: bool = False,
                 newton_variant: Optional[str] = None,
                 newton_iter: int = 20,
                 kernel_method: str = 'expand',
                 kernel_impl: str = 'auto',
                 max_landmarks: Optional[int] = None,
                 qkv_bias: bool = True,
                 grid: Optional[Tuple[int, int]] = None):
        super().__init__()
        head_dims(embed_dims, num_heads)
        if newton_variant is None:
            newton_variant = 'b' if sym_norm else 'a'
        for name, value, valid in (('newton_variant', newton_variant,
                                    NEWTON_VARIANTS),
                                   ('kernel_method', kernel_method,
                                    KERNEL_METHODS),
                                   ('kernel_impl', kernel_impl,
                                    KERNEL_IMPLS)):
            if value not in valid:
                raise ValueError(f'{name} must be one of {valid}, got '
                                 f'{value!r}')
        if sr_ratio is None:
            if grid is None:
                raise ValueError(
                    'SoftmaxFreeAttention needs sr_ratio (its landmark '
                    'stride) or the pretraining token grid from its host; '
                    'set sr_ratio in attn_cfg')
            sr_ratio = max(1, min(grid) // 7)
        if sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        if max_landmarks is not None and max_landmarks < 1:
            raise ValueError('max_landmarks must be None or >= 1, got '
                             f'{max_landmarks}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.sr_ratio = sr_ratio
        self.sym_norm = sym_norm
        self.newton_variant = newton_variant
        self.newton_iter = newton_iter
        self.kernel_method = kernel_method
        self.kernel_impl = kernel_impl
        self.max_landmarks = max_landmarks

        self.q = Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.v = Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.landmark_conv = nn.Conv2d(
            self.head_dims,
            self.head_dims,
            kernel_size=sr_ratio,
            stride=sr_ratio,
            bias=False)
        self.landmark_norm = nn.LayerNorm(self.head_dims)
        self.local_conv = nn.Conv2d(
            num_heads,
            num_heads,
            conv_size,
            padding=conv_size // 2,
            groups=num_heads,
            bias=False) if conv_size else None
        self.proj = Linear(embed_dims, embed_dims)

    def landmark_grid(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        """Landmark grid (h', w') for a token grid ``hw``."""
        r = self.sr_ratio
        gh, gw = hw[0] // r, hw[1] // r
        if self.max_landmarks is not None and gh * gw > self.max_landmarks:
            scale = math.sqrt(self.max_landmarks / (gh * gw))
            gh, gw = max(1, int(gh * scale)), max(1, int(gw * scale))
        return gh, gw

    def _landmarks(self, query: torch.Tensor,
                   hw: Tuple[int, int]) -> torch.Tensor:
        """(B, N, C) scaled queries -> (B, h, m, d) landmarks.

        The conv shared by the heads runs as one conv with ``h`` groups
        (its weight repeated per group) on the channels-last view of the
        tokens: the same sums without moving the queries into a
        (B * h, d, H, W) map.
        """
        B, N, C = query.shape
        h, d = self.num_heads, self.head_dims
        H, W = hw
        if H < self.sr_ratio or W < self.sr_ratio:
            raise ValueError(
                f'SoftmaxFreeAttention needs a token grid of at least '
                f'{self.sr_ratio}x{self.sr_ratio} for its landmark conv '
                f'(sr_ratio={self.sr_ratio}), got {H}x{W}; use larger '
                'inputs or a smaller sr_ratio')
        grid = tokens_as_nchw(query, hw)
        gh, gw = self.landmark_grid(hw)
        if (gh, gw) != (H // self.sr_ratio, W // self.sr_ratio):
            grid = F.adaptive_avg_pool2d(
                grid, (gh * self.sr_ratio, gw * self.sr_ratio))
        landmarks = F.conv2d(
            grid,
            self.landmark_conv.weight.repeat(h, 1, 1, 1),
            stride=self.sr_ratio,
            groups=h)
        landmarks = nchw_as_tokens(landmarks).view(B, -1, h, d).transpose(1, 2)
        return F.gelu(self.landmark_norm(landmarks))

    def _local_conv(self, value: torch.Tensor,
                    hw: Tuple[int, int]) -> torch.Tensor:
        """(B, N, C) values -> (B, N, C): each head's k x k filter on all of
        that head's channels, as one C-channel depthwise conv (filters
        repeated per channel) on the channels-last view of the tokens."""
        conv = self.local_conv
        x = F.conv2d(
            tokens_as_nchw(value, hw),
            conv.weight.repeat_interleave(self.head_dims, dim=0),
            padding=conv.padding,
            groups=self.embed_dims)
        return nchw_as_tokens(x)

    def use_fused(self, query: torch.Tensor, num_landmarks: int) -> bool:
        """Whether :meth:`forward` takes the fused (memory-linear) path."""
        if self.kernel_impl == 'auto':
            return (num_landmarks > 2 * self.head_dims
                    and ops_backend(query) == 'extension')
        return self.kernel_impl == 'fused'

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) tokens of an H x W grid ``hw`` -> (B, H*W, C)."""
        B, N, C = x.shape
        if N != hw[0] * hw[1]:
            raise ValueError(f'{N} tokens do not form a {hw[0]}x{hw[1]} '
                             'grid')
        h, d = self.num_heads, self.head_dims
        query = self.q(x) / math.sqrt(math.sqrt(d))
        value = self.v(x)
        landmarks = self._landmarks(query, hw)
        out = run_in_float32(
            softmax_free_attention,
            query.view(B, N, h, d).transpose(1, 2),
            landmarks,
            value.view(B, N, h, d).transpose(1, 2),
            sym_norm=self.sym_norm,
            newton_variant=self.newton_variant,
            newton_iter=self.newton_iter,
            kernel_method=self.kernel_method,
            fused=self.use_fused(query, landmarks.shape[2]))
        out = out.transpose(1, 2).reshape(B, N, C)
        if self.local_conv is not None:
            out = out + self._local_conv(value, hw)
        return self.proj(out)

    def extra_repr(self) -> str:
        return (f'sr_ratio={self.sr_ratio}, sym_norm={self.sym_norm}, '
                f'newton_variant={self.newton_variant!r}, '
                f'newton_iter={self.newton_iter}, kernel_method='
                f'{self.kernel_method!r}, kernel_impl={self.kernel_impl!r}, '
                f'max_landmarks={self.max_landmarks}')
