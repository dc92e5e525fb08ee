# Copyright (c) mmlinattn contributors. All rights reserved.
"""Gaussian-kernel ops of SOFT (Lu et al., "SOFT: Softmax-free Transformer
with Linear Complexity", NeurIPS 2021, arXiv:2110.11945).

For ``q`` of shape (B, h, N, d) and ``k`` of shape (B, h, M, d):

* :func:`sqdist`: ``D[b, h, i, j] = ||q_i - k_j||^2`` (B, h, N, M);
* :func:`gaussian_kernel`: ``K = exp(-D / 2)`` with the exp fused;
* :func:`gaussian_kernel_matmul`: ``K(q, l) @ x`` for x (B, h, M, e);
* :func:`gaussian_kernel_t_matmul`: ``K(q, l)^T @ v`` for v (B, h, N, e).

The two products never materialise the N x M kernel in the compiled path
(tiled, flash-attention style; the backward recomputes the kernel tile by
tile), so their memory is O((N + M)(d + e)) instead of O(N M).

Dispatch: the compiled op of ``mmlinattn._ext`` runs when the extension has
a kernel for the tensors' device (CPU always, CUDA when built with it);
otherwise, or with ``force_reference=True`` or inside
``with reference_ops():``, the pure-PyTorch ``*_reference`` function runs.
``MMLINATTN_DISABLE_EXT=1`` disables the extension for the whole process.

Precision: fp32, fp64, fp16 and bf16 inputs; every reduction accumulates in
fp32 (fp64 for fp64 inputs) and the result has the input dtype. Under
autocast the ops cast their inputs to fp32 and return fp32 (a Gaussian
kernel of distances ~10-100 underflows fp16).

``method='exact'`` computes ``sum_c (q_ic - k_jc)^2`` (exactly 0 for equal
points); ``method='expand'`` computes ``||q||^2 + ||k||^2 - 2 q k^T``, the
numerics of the official torch-path checkpoints (may be slightly negative on
a self-distance diagonal; it is matmul-bound and always runs in PyTorch).
"""
import contextlib
from typing import ContextManager, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd import Function

from .ext_loader import ext_has_cuda, ext_module, reference_forced

_METHODS = ('exact', 'expand')
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Elements of the (rows, M, d) difference tensor the exact reference
# materialises per chunk (64 MiB in fp32).
_REFERENCE_CHUNK_NUMEL = 1 << 24



# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------
def _check_inputs(
    op: str,
    points: Sequence[Tuple[str, Tensor]],
    features: Sequence[Tuple[str, Tensor, str]] = ()
) -> None:
    """Check ranks, dtypes, devices and shapes; name the shapes on error.

    ``points`` are (name, tensor) pairs of shape (B, h, *, d); ``features``
    are (name, tensor, points_name) with shape (B, h, rows of points_name, *).
    """
    named = list(points) + [(n, t) for n, t, _ in features]
    for name, t in named:
        if not isinstance(t, Tensor):
            raise TypeError(f'{op}: {name} must be a torch.Tensor, got '
                            f'{type(t).__name__}')

    def shapes() -> str:  # only built for an error message (not traced)
        return ', '.join(f'{n}={tuple(t.shape)}' for n, t in named)

    for name, t in named:
        if t.dim() != 4:
            raise ValueError(f'{op}: expected 4-D (B, h, L, C) tensors, got '
                             f'{name} with {t.dim()} dims ({shapes()}); '
                             'split the heads first, e.g. '
                             'x.view(B, L, h, C).transpose(1, 2)')
    first_name, first = named[0]
    for name, t in named:
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f'{op}: {name} has dtype {t.dtype}; expected one '
                            'of float16, bfloat16, float32, float64')
        if t.dtype != first.dtype:
            raise TypeError(f'{op}: mixed dtypes {first_name}={first.dtype} '
                            f'and {name}={t.dtype} ({shapes()}); cast them to '
                            'one dtype')
        if t.device != first.device:
            raise ValueError(f'{op}: tensors on different devices: '
                             f'{first_name} on {first.device}, {name} on '
                             f'{t.device} ({shapes()}); move them to one '
                             'device')
    for name, t in named[1:]:
        if t.shape[:2] != first.shape[:2]:
            raise ValueError(f'{op}: batch and head dims differ: '
                             f'{first_name}={tuple(first.shape)} vs '
                             f'{name}={tuple(t.shape)}; all inputs need the '
                             'same (B, h)')
    for name, t in points[1:]:
        if t.shape[-1] != first.shape[-1]:
            raise ValueError(f'{op}: channel dims differ: {first_name}='
                             f'{tuple(first.shape)} vs {name}='
                             f'{tuple(t.shape)}; the points need the same d')
    rows = {n: t.shape[2] for n, t in points}
    for name, t, of in features:
        if t.shape[2] != rows[of]:
            raise ValueError(f'{op}: {name}={tuple(t.shape)} needs '
                             f'{rows[of]} rows (dim 2), one per row of {of} '
                             f'({shapes()})')


def _check_method(op: str, method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f'{op}: method must be one of {_METHODS}, got '
                         f'{method!r}')


# ---------------------------------------------------------------------------
# autocast and dispatch helpers
# ---------------------------------------------------------------------------
def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        return device_type == 'cuda' and torch.is_autocast_enabled()
    except RuntimeError:  # no autocast for this device type (e.g. meta)
        return False


@contextlib.contextmanager
def _fp32_if_autocast(tensors: Sequence[Tensor]) -> Iterator[list]:
    """Yield the tensors, cast to fp32 with autocast off if it was on."""
    device_type = tensors[0].device.type
    if not _autocast_enabled(device_type):
        yield list(tensors)
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield [t.float() for t in tensors]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# An extension built from older sources may lack these ops.
_EXT_HAS_OPS = ext_module is not None and hasattr(ext_module,
                                                  'gaussian_sqdist_forward')


def _use_ext(t: Tensor, force_reference: bool) -> bool:
    if force_reference or not _EXT_HAS_OPS or reference_forced():
        return False
    if t.device.type == 'cpu':
        return True
    return t.device.type == 'cuda' and ext_has_cuda()


def _flat(t: Tensor) -> Tensor:
    """(B, h, L, C) -> contiguous (B*h, L, C)."""
    b, h, length, channels = t.shape
    return t.reshape(b * h, length, channels).contiguous()


# ---------------------------------------------------------------------------
# pure-PyTorch references
# ---------------------------------------------------------------------------
def _exact_sqdist_values(q: Tensor, k: Tensor) -> Tensor:
    """sum_c (q_ic - k_jc)^2 in the accumulation dtype, chunked over rows so
    that at most ``_REFERENCE_CHUNK_NUMEL`` differences exist at once."""
    acc = _acc_dtype(q.dtype)
    q, k = q.to(acc), k.to(acc)
    *lead, n, d = q.shape
    m = k.shape[-2]
    out = q.new_empty(*lead, n, m)
    per_row = max(1, m * d * out[..., :1, :1].numel())
    step = max(1, _REFERENCE_CHUNK_NUMEL // per_row)
    k = k.unsqueeze(-3)
    for start in range(0, n, step):
        diff = q[..., start:start + step, None, :] - k
        out[..., start:start + step, :] = diff.square_().sum(-1)
    return out


class _ExactSqDistReference(Function):
    """Exact squared distances in PyTorch with the closed-form gradient
    (written with differentiable ops, so double backward works):
    dq = 2 (rowsum(G) q - G k), dk = 2 (colsum(G) k - G^T q)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:
        ctx.save_for_backward(q, k)
        return _exact_sqdist_values(q, k).to(q.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, Tensor]:
        q, k = ctx.saved_tensors
        acc = _acc_dtype(q.dtype)
        g, qa, ka = grad.to(acc), q.to(acc), k.to(acc)
        grad_q = 2 * (g.sum(-1, keepdim=True) * qa - g @ ka)
        grad_k = 2 * (g.sum(-2).unsqueeze(-1) * ka - g.transpose(-1, -2) @ qa)
        return grad_q.to(q.dtype), grad_k.to(k.dtype)


def _expand_sqdist(q: Tensor, k: Tensor) -> Tensor:
    acc = _acc_dtype(q.dtype)
    qa, ka = q.to(acc), k.to(acc)
    q_sq = qa.square().sum(-1, keepdim=True)
    k_sq = ka.square().sum(-1).unsqueeze(-2)
    return (q_sq + k_sq - 2 * (qa @ ka.transpose(-1, -2))).to(q.dtype)


def sqdist_reference(q: Tensor, k: Tensor, method: str = 'exact') -> Tensor:
    """Pure-PyTorch :func:`sqdist` (memory O(N M); the exact form works in
    row chunks and has a closed-form backward)."""
    _check_method('sqdist_reference', method)
    _check_inputs('sqdist_reference', [('q', q), ('k', k)])
    with _fp32_if_autocast([q, k]) as (q, k):
        if method == 'expand':
            return _expand_sqdist(q, k)
        return _ExactSqDistReference.apply(q, k)


def gaussian_kernel_reference(q: Tensor,
                              k: Tensor,
                              method: str = 'exact') -> Tensor:
    """Pure-PyTorch :func:`gaussian_kernel`: ``exp(-sqdist(q, k) / 2)``."""
    _check_method('gaussian_kernel_reference', method)
    _check_inputs('gaussian_kernel_reference', [('q', q), ('k', k)])
    with _fp32_if_autocast([q, k]) as (q, k):
        acc = _acc_dtype(q.dtype)
        dist = sqdist_reference(q.to(acc), k.to(acc), method)
        return torch.exp(-0.5 * dist).to(q.dtype)


def gaussian_kernel_matmul_reference(
        q: Tensor,
        l: Tensor,  # noqa: E741
        x: Tensor) -> Tensor:
    """Pure-PyTorch :func:`gaussian_kernel_matmul` (materialises N x M)."""
    _check_inputs('gaussian_kernel_matmul_reference', [('q', q), ('l', l)],
                  [('x', x, 'l')])
    with _fp32_if_autocast([q, l, x]) as (q, l, x):
        acc = _acc_dtype(q.dtype)
        kernel = gaussian_kernel_reference(q.to(acc), l.to(acc))
        return (kernel @ x.to(acc)).to(q.dtype)


def gaussian_kernel_t_matmul_reference(
        q: Tensor,
        l: Tensor,  # noqa: E741
        v: Tensor) -> Tensor:
    """Pure-PyTorch :func:`gaussian_kernel_t_matmul` (materialises N x M)."""
    _check_inputs('gaussian_kernel_t_matmul_reference', [('q', q), ('l', l)],
                  [('v', v, 'q')])
    with _fp32_if_autocast([q, l, v]) as (q, l, v):
        acc = _acc_dtype(q.dtype)
        kernel = gaussian_kernel_reference(q.to(acc), l.to(acc))
        return (kernel.transpose(-1, -2) @ v.to(acc)).to(q.dtype)


# ---------------------------------------------------------------------------
# compiled ops (mmlinattn._ext) as PyTorch custom operators
# ---------------------------------------------------------------------------
# ``torch.ops.mmlinattn.*`` wrap the pybind functions of ``mmlinattn._ext``
# with a fake (meta) kernel and a registered autograd formula, so that
# ``torch.compile`` traces them as single graph nodes (no graph break),
# ``torch.jit.trace`` records them as ``mmlinattn::<name>`` (the FLOP
# handles of :mod:`mmlinattn.utils.flops` are keyed on that), and
# ``torch.library.opcheck`` can test them. The backward ops have no autograd
# formula themselves: the compiled ops are once-differentiable (the
# references support double backward).
def _no_autocast(t: Tensor) -> ContextManager:
    """Autocast off inside an op: the nested ATen calls of the extension
    (casts, GEMMs of the backward) must keep fp32 / fp64."""
    if _autocast_enabled(t.device.type):
        return torch.autocast(device_type=t.device.type, enabled=False)
    return contextlib.nullcontext()


@torch.library.custom_op('mmlinattn::gaussian_sqdist', mutates_args=())
def _sqdist_op(q: Tensor, k: Tensor, apply_exp: bool) -> Tensor:
    """Exact squared distances (``apply_exp=False``) or the Gaussian kernel
    ``exp(-d/2)`` (``apply_exp=True``) of q (B, h, N, d) and k (B, h, M, d)
    in one pass of ``mmlinattn._ext``; (B, h, N, M)."""
    with _no_autocast(q):
        out = ext_module.gaussian_sqdist_forward(_flat(q), _flat(k), apply_exp)
    return out.view(*q.shape[:-1], k.shape[-2])


@_sqdist_op.register_fake
def _(q: Tensor, k: Tensor, apply_exp: bool) -> Tensor:
    return q.new_empty(*q.shape[:-1], k.shape[-2])


@torch.library.custom_op(
    'mmlinattn::gaussian_sqdist_backward', mutates_args=())
def _sqdist_backward_op(grad: Tensor, q: Tensor, k: Tensor,
                        kernel: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(dq, dk) of :func:`_sqdist_op`, of ``exp(-d/2)`` given its output
    ``kernel``: two GEMMs in fp32 (fp64)."""
    with _no_autocast(q):
        grad_q, grad_k = ext_module.gaussian_sqdist_backward(
            _flat(grad), _flat(q), _flat(k),
            None if kernel is None else _flat(kernel))
    return grad_q.view(q.shape), grad_k.view(k.shape)


@_sqdist_backward_op.register_fake
def _(grad: Tensor, q: Tensor, k: Tensor,
      kernel: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape)


def _sqdist_setup_context(ctx, inputs, output) -> None:
    q, k, apply_exp = inputs
    ctx.save_for_backward(q, k, output if apply_exp else None)


def _sqdist_backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
    q, k, kernel = ctx.saved_tensors
    grad_q, grad_k = _sqdist_backward_op(grad, q, k, kernel)
    return grad_q, grad_k, None


_sqdist_op.register_autograd(
    _sqdist_backward, setup_context=_sqdist_setup_context)


@torch.library.custom_op('mmlinattn::gaussian_kernel_matmul', mutates_args=())
def _kernel_matmul_op(p: Tensor, o: Tensor, x: Tensor) -> Tensor:
    """Fused, memory-linear ``exp(-sqdist(p, o) / 2) @ x`` of
    ``mmlinattn._ext``; p (B, h, R, d), o (B, h, C, d), x (B, h, C, e)
    -> (B, h, R, e)."""
    with _no_autocast(p):
        out = ext_module.gaussian_kernel_matmul_forward(
            _flat(p), _flat(o), _flat(x))
    return out.view(*p.shape[:-1], x.shape[-1])


@_kernel_matmul_op.register_fake
def _(p: Tensor, o: Tensor, x: Tensor) -> Tensor:
    return p.new_empty(*p.shape[:-1], x.shape[-1])


@torch.library.custom_op(
    'mmlinattn::gaussian_kernel_matmul_backward', mutates_args=())
def _kernel_matmul_backward_op(p: Tensor, o: Tensor, a: Tensor, b: Tensor,
                               with_kb: bool) -> List[Tensor]:
    """``[dp]`` or ``[dp, K(p, o) b]`` with ``s_rc = K_rc (a_r . b_c)``,
    ``dp_r = sum_c s_rc (o_c - p_r)`` (one fused pass of the extension)."""
    with _no_autocast(p):
        grad_p, kb = ext_module.gaussian_kernel_matmul_backward(
            _flat(p), _flat(o), _flat(a), _flat(b), with_kb)
    grad_p = grad_p.view(p.shape)
    if not with_kb:
        return [grad_p]
    return [grad_p, kb.view(*p.shape[:-1], b.shape[-1])]


@_kernel_matmul_backward_op.register_fake
def _(p: Tensor, o: Tensor, a: Tensor, b: Tensor,
      with_kb: bool) -> List[Tensor]:
    grad_p = p.new_empty(p.shape)
    if not with_kb:
        return [grad_p]
    return [grad_p, p.new_empty(*p.shape[:-1], b.shape[-1])]


def _kernel_matmul_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _kernel_matmul_backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
    p, o, x = ctx.saved_tensors
    need_p, need_o, need_x = ctx.needs_input_grad
    grad_p = grad_o = grad_x = None
    if need_p:
        # s_rc = K_rc (g_r . x_c); dp_r = sum_c s_rc (o_c - p_r)
        grad_p = _kernel_matmul_backward_op(p, o, grad, x, False)[0]
    if need_o or need_x:
        # do_c = sum_r s_rc (p_r - o_c); dx_c = sum_r K_rc g_r
        grads = _kernel_matmul_backward_op(o, p, x, grad, need_x)
        grad_o = grads[0] if need_o else None
        grad_x = grads[1] if need_x else None
    return grad_p, grad_o, grad_x


_kernel_matmul_op.register_autograd(
    _kernel_matmul_backward, setup_context=_kernel_matmul_setup_context)


# ---------------------------------------------------------------------------
# public ops
# ---------------------------------------------------------------------------
def sqdist(q: Tensor,
           k: Tensor,
           method: str = 'exact',
           *,
           force_reference: bool = False) -> Tensor:
    """Squared Euclidean distances ``||q_i - k_j||^2``.

    Args:
        q (Tensor): (B, h, N, d).
        k (Tensor): (B, h, M, d); may be ``q`` itself.
        method (str): ``'exact'`` (difference form, exact zeros for equal
            points) or ``'expand'`` (``|q|^2 + |k|^2 - 2 q k^T``, the
            official torch-path numerics; always PyTorch).
        force_reference (bool): use the pure-PyTorch reference.

    Returns:
        Tensor: (B, h, N, M), dtype of the inputs (fp32 under autocast).
    """
    _check_method('sqdist', method)
    _check_inputs('sqdist', [('q', q), ('k', k)])
    if method == 'expand' or not _use_ext(q, force_reference):
        return sqdist_reference(q, k, method)
    with _fp32_if_autocast([q, k]) as (q, k):
        return _sqdist_op(q, k, False)


def gaussian_kernel(q: Tensor,
                    k: Tensor,
                    method: str = 'exact',
                    *,
                    force_reference: bool = False) -> Tensor:
    """Gaussian kernel ``exp(-||q_i - k_j||^2 / 2)``, exp fused.

    Args and returns as in :func:`sqdist`.
    """
    _check_method('gaussian_kernel', method)
    _check_inputs('gaussian_kernel', [('q', q), ('k', k)])
    if method == 'expand' or not _use_ext(q, force_reference):
        return gaussian_kernel_reference(q, k, method)
    with _fp32_if_autocast([q, k]) as (q, k):
        return _sqdist_op(q, k, True)


def gaussian_kernel_matmul(
        q: Tensor,
        l: Tensor,  # noqa: E741
        x: Tensor,
        *,
        force_reference: bool = False) -> Tensor:
    """``exp(-sqdist(q, l) / 2) @ x`` without materialising the kernel.

    Args:
        q (Tensor): (B, h, N, d) queries.
        l (Tensor): (B, h, M, d) landmarks.
        x (Tensor): (B, h, M, e).
        force_reference (bool): use the pure-PyTorch reference.

    Returns:
        Tensor: (B, h, N, e).
    """
    _check_inputs('gaussian_kernel_matmul', [('q', q), ('l', l)],
                  [('x', x, 'l')])
    if not _use_ext(q, force_reference):
        return gaussian_kernel_matmul_reference(q, l, x)
    with _fp32_if_autocast([q, l, x]) as (q, l, x):
        return _kernel_matmul_op(q, l, x)


def gaussian_kernel_t_matmul(
        q: Tensor,
        l: Tensor,  # noqa: E741
        v: Tensor,
        *,
        force_reference: bool = False) -> Tensor:
    """``exp(-sqdist(q, l) / 2)^T @ v`` without materialising the kernel.

    Args:
        q (Tensor): (B, h, N, d) queries.
        l (Tensor): (B, h, M, d) landmarks.
        v (Tensor): (B, h, N, e).
        force_reference (bool): use the pure-PyTorch reference.

    Returns:
        Tensor: (B, h, M, e).
    """
    _check_inputs('gaussian_kernel_t_matmul', [('q', q), ('l', l)],
                  [('v', v, 'q')])
    if not _use_ext(q, force_reference):
        return gaussian_kernel_t_matmul_reference(q, l, v)
    with _fp32_if_autocast([q, l, v]) as (q, l, v):
        # K(q, l)^T = K(l, q): the same fused op with the point sets swapped.
        return _kernel_matmul_op(l, q, v)


def ops_backend(t: Optional[Tensor] = None) -> str:
    """``'extension'`` if the ops run compiled for ``t``'s device (default:
    CPU), else ``'reference'``."""
    t = torch.empty(0) if t is None else t
    return 'extension' if _use_ext(t, False) else 'reference'
