# Copyright (c) mmlinattn contributors. All rights reserved.
"""Newton-Schulz steps of SOFT's pseudo-inverse.

SOFT (Lu et al., "SOFT: Softmax-free Transformer with Linear Complexity",
NeurIPS 2021) inverts its landmark kernels with ``V <- 2V - V A V``, 20
steps on (B * heads, m, m) stacks with m = 49 landmarks at 224. As batched
GEMMs each step is two calls over the whole stack (``bmm`` ~20 us and
``baddbmm`` ~30 us at (10, 49, 49) on 2 threads, 2026-12-02, AMD EPYC with
AVX-512), about half of a SOFT attention layer at 14 x 14. The CPU kernel of
``mmlinattn._ext`` gives each thread whole matrices and runs all steps of
one with its four m x m operands in cache, in register tiles summed over k
in order with one fused multiply-add per term (docs/ops.md has its
timings). Its values equal the reference's up to float rounding (bit for
bit wherever the BLAS sums k in order, as oneDNN's small GEMMs here do).

Dispatch: the compiled kernel runs for float32 / float64 CPU tensors with
m <= 128 in eager mode outside autocast. With autograd through the steps
(SOFT-Norm's variant (b) in training) it is one autograd node that keeps
only its inputs and recomputes the iterates in backward, instead of the 2 *
num_iter stacks the GEMM form keeps (SOFT's variant (a) has an analytic
backward and calls the steps without autograd). Otherwise (other devices
or dtypes, larger m, where the BLAS's cache blocking wins, ``torch.compile``
or tracing, inside :func:`~mmlinattn.ops.reference_ops`, without the
extension) :func:`newton_schulz_steps` is
:func:`newton_schulz_steps_reference`.
"""
import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from .ext_loader import ext_module, reference_forced

_EXT_HAS_OP = ext_module is not None and hasattr(ext_module,
                                                 'newton_schulz_steps')
# the largest m for which the in-cache kernel beats the batched GEMMs
# (m = 64: 1.7x, m = 128: 1.0x, m = 256: 0.93x on the machine above)
MAX_COMPILED_ORDER = 128


def newton_schulz_steps_reference(inv: Tensor, mat: Tensor,
                                  num_iter: int) -> Tensor:
    """``num_iter`` steps ``V <- 2V - (V A) V`` on (..., m, m) stacks as
    batched GEMMs: one ``bmm`` and one ``baddbmm`` per step (``2V - XV``
    in the GEMM's epilogue). ``mat`` broadcasts to ``inv``."""
    shape = inv.shape
    inv = inv.reshape(-1, shape[-2], shape[-1])
    mat = mat.expand(shape).reshape(inv.shape)
    for _ in range(num_iter):
        inv = torch.baddbmm(inv, inv @ mat, inv, beta=2, alpha=-1)
    return inv.reshape(shape)


def _use_compiled(inv: Tensor, mat: Tensor) -> bool:
    return (_EXT_HAS_OP and not reference_forced()
            and inv.device.type == 'cpu' and mat.device.type == 'cpu'
            and inv.dtype in (torch.float32, torch.float64)
            and mat.dtype == inv.dtype
            and inv.shape[-1] <= MAX_COMPILED_ORDER
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


class _NewtonSchulzSteps(Function):
    """The steps from the compiled kernel, differentiable: forward keeps
    only its inputs (autograd of the GEMM form keeps ``V`` and ``V A`` of
    every step: 2 * num_iter stacks per call until backward); backward
    recomputes the iterates with the GEMM form and runs the steps' adjoint,
    for ``V' = 2V - X V`` with ``X = V A`` and output gradient ``G``::

        G_X = -G V^T,   dA += V^T G_X,   dV = 2G + G_X A^T - X^T G

    (the four GEMMs autograd runs; gradients equal autograd's up to float
    summation order)."""

    @staticmethod
    def forward(ctx, inv: Tensor, mat: Tensor, num_iter: int) -> Tensor:
        ctx.save_for_backward(inv, mat)
        ctx.num_iter = num_iter
        return ext_module.newton_schulz_steps(inv, mat, num_iter)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        inv, mat = ctx.saved_tensors
        iterates = []  # (V, V A) of every step, only during this backward
        for _ in range(ctx.num_iter):
            va = inv @ mat
            iterates.append((inv, va))
            inv = torch.baddbmm(inv, va, inv, beta=2, alpha=-1)
        mat_t = mat.transpose(-2, -1)
        grad_mat = torch.zeros_like(mat) if ctx.needs_input_grad[1] else None
        for inv, va in reversed(iterates):
            grad_va = -(grad @ inv.transpose(-2, -1))
            if grad_mat is not None:
                grad_mat.baddbmm_(inv.transpose(-2, -1), grad_va)
            grad = torch.baddbmm(grad_va @ mat_t, va.transpose(-2, -1), grad,
                                 beta=1, alpha=-1).add_(grad, alpha=2)
        return grad, grad_mat, None


def newton_schulz_steps(inv: Tensor, mat: Tensor, num_iter: int) -> Tensor:
    """``num_iter`` steps ``V <- 2V - (V A) V`` of ``inv`` (..., m, m) with
    ``mat`` (broadcast to ``inv``'s shape), from the compiled kernel where
    it applies (module docstring), else from
    :func:`newton_schulz_steps_reference`."""
    if inv.dim() < 2 or inv.shape[-1] != inv.shape[-2]:
        raise ValueError(f'newton_schulz_steps needs square matrices '
                         f'(..., m, m), got inv {tuple(inv.shape)}')
    if not _use_compiled(inv, mat):
        return newton_schulz_steps_reference(inv, mat, num_iter)
    shape = inv.shape
    stack = inv.reshape(-1, shape[-2], shape[-1])
    mat = mat.expand(shape).reshape(stack.shape)
    if num_iter > 0 and torch.is_grad_enabled() and (inv.requires_grad
                                                      or mat.requires_grad):
        steps = _NewtonSchulzSteps.apply(stack.contiguous(),
                                         mat.contiguous(), num_iter)
    else:
        steps = ext_module.newton_schulz_steps(stack, mat, num_iter)
    return steps.reshape(shape)
