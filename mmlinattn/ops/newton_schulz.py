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
m <= 128 when no gradient flows through the steps (SOFT's variant (a) has an
analytic backward, so it runs there in training too), in eager mode outside
autocast; otherwise (other devices or dtypes, larger m, where the BLAS's
cache blocking wins, autograd through the steps, ``torch.compile`` or
tracing, inside :func:`~mmlinattn.ops.reference_ops`, without the
extension) :func:`newton_schulz_steps` is
:func:`newton_schulz_steps_reference`.
"""
import torch
from torch import Tensor

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
            and not (torch.is_grad_enabled() and
                     (inv.requires_grad or mat.requires_grad))
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


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
    return ext_module.newton_schulz_steps(
        stack, mat.expand(shape).reshape(stack.shape), num_iter).reshape(shape)
