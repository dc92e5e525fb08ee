# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLOP and activation handles for mmengine's complexity analysis, all in
one table, registered once when :mod:`mmlinattn` is imported.

The compiled Gaussian-kernel ops of :mod:`mmlinattn.ops` are PyTorch custom
operators and trace as ``mmlinattn::<op>``; an ``autograd.Function`` (the
exact-distance reference, SOFT's Newton-Schulz inverse) traces as
``prim::PythonOp.<ClassName>``. mmengine's ``FlopAnalyzer`` reports both as
unsupported (a distance costs d, a product term e, the exp is not counted,
as softmax). mmengine 0.10.7
also has no handle for ``aten::scaled_dot_product_attention``
(used by every softmax attention here: HiLo, Swin windows, PVT spatial
reduction), for ``aten::baddbmm`` (SOFT-Norm's Newton-Schulz steps), for
``torchvision::deform_conv2d`` (LITv2's deformable token
merging) or for the traced ``autograd.Function`` of SOFT's Newton-Schulz
inverse, so ``get_model_complexity_info`` silently drops their cost. The
handles are added to
``mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_{FLOP,ACT}_OPS``
(read by every new ``FlopAnalyzer`` / ``ActivationAnalyzer``, so also by
``get_model_complexity_info``) by :func:`register_flop_handles`.

Convention (mmengine's and fvcore's): one multiply-add is one FLOP;
softmax, exp, masks, biases and other elementwise work are not counted.
"""
from math import prod
from typing import Any, List

_PYTHON_OP = 'prim::PythonOp.'
_CUSTOM_OP = 'mmlinattn::'
_NEWTON_OP = _PYTHON_OP + '_RegularizedNewtonInverse'


def _shape(value: Any) -> List[int]:
    return list(value.type().sizes())


def sqdist_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """(B, h, N, d) x (B, h, M, d) -> B h N M d multiply-adds."""
    q_shape, k_shape = _shape(inputs[0]), _shape(inputs[1])
    return prod(q_shape) * k_shape[-2]


def gaussian_kernel_matmul_flop_jit(inputs: List[Any],
                                    outputs: List[Any]) -> int:
    """p (B, h, R, d), o (B, h, C, d), x (B, h, C, e) -> B h R C (d + e)."""
    p_shape, o_shape, x_shape = (_shape(v) for v in inputs[:3])
    return prod(p_shape[:-1]) * o_shape[-2] * (p_shape[-1] + x_shape[-1])


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``softmax(q k^T) v`` for q (..., L, E), k (..., S, E), v (..., S, Ev):
    ``prod(...) * L * S * (E + Ev)`` multiply-adds (the two matmuls; the
    batch dims of q are the broadcast batch of the op)."""
    q_shape, k_shape, v_shape = (_shape(v) for v in inputs[:3])
    return prod(q_shape[:-1]) * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def deform_conv2d_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``torchvision::deform_conv2d(input, weight, offset, mask, bias,
    ...)``: the multiply-adds of a dense convolution with the same weight
    and output, ``numel(out) * Cin / groups * kh * kw``. Bilinear sampling
    of the input (4 multiply-adds per sampled value, ``4 / Cout`` of the
    above) is elementwise work and not counted."""
    weight_shape = _shape(inputs[1])
    return prod(_shape(outputs[0])) * prod(weight_shape[1:])


def newton_inverse_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """SOFT's Newton-Schulz inverse (variant a) of (..., m, m) matrices:
    ``num_iter`` steps ``V <- 2V - V A V`` of two m x m x m matmuls each.
    ``num_iter`` is the scalar argument recorded on the traced node."""
    mat_shape = _shape(inputs[0])
    scalars = [
        s for s in outputs[0].node().scalar_args() if isinstance(s, int)
    ]
    if not scalars:
        raise RuntimeError(f'{_NEWTON_OP}: the traced node carries no '
                           'iteration count')
    return 2 * scalars[0] * prod(mat_shape) * mat_shape[-1]


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``baddbmm(input, b1, b2)``: the ``b1 @ b2`` multiply-adds
    (scaling and adding ``input`` is elementwise), as ``aten::bmm``."""
    b1_shape, b2_shape = _shape(inputs[1]), _shape(inputs[2])
    return prod(b1_shape) * b2_shape[-1]


def output_activation_jit(inputs: List[Any], outputs: List[Any]) -> int:
    return prod(_shape(outputs[0]))


FLOP_HANDLES = {
    # torch.ops.mmlinattn.* (mmlinattn.ops.gaussian_kernel); the backward
    # ops never appear in a forward trace
    _CUSTOM_OP + 'gaussian_sqdist': sqdist_flop_jit,
    _CUSTOM_OP + 'gaussian_kernel_matmul': gaussian_kernel_matmul_flop_jit,
    _PYTHON_OP + '_ExactSqDistReference': sqdist_flop_jit,
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::baddbmm': baddbmm_flop_jit,
    'torchvision::deform_conv2d': deform_conv2d_flop_jit,
    _NEWTON_OP: newton_inverse_flop_jit,
}


def register_flop_handles() -> bool:
    """Add :data:`FLOP_HANDLES` (and output-size activation handles) to
    mmengine's default tables. Idempotent.

    Returns:
        bool: False if ``mmengine.analysis`` cannot be imported.
    """
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:
        return False
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.update(FLOP_HANDLES)
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.update(
        {name: output_activation_jit
         for name in FLOP_HANDLES})
    return True
