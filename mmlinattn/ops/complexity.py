# Copyright (c) mmlinattn contributors. All rights reserved.
"""FLOP and activation handles of the Gaussian-kernel ops for mmengine's
complexity analysis.

An ``autograd.Function`` traces as ``prim::PythonOp.<ClassName>``, which
mmengine's ``FlopAnalyzer`` reports as unsupported.
``get_model_complexity_info`` builds fresh analyzers whose handles come from
``mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_{FLOP,ACT}_OPS``,
so the handles are added there (``register_complexity_handles`` runs when
``mmlinattn.ops`` is imported). Like mmengine, one multiply-add is one FLOP:
a distance costs d, a product term e, the exp is not counted (as softmax).
"""
from math import prod
from typing import Any, List

_PREFIX = 'prim::PythonOp.'


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


def output_activation_jit(inputs: List[Any], outputs: List[Any]) -> int:
    return prod(_shape(outputs[0]))


FLOP_HANDLES = {
    _PREFIX + 'SqDistFunction': sqdist_flop_jit,
    _PREFIX + '_ExactSqDistReference': sqdist_flop_jit,
    _PREFIX + 'GaussianKernelMatmulFunction': gaussian_kernel_matmul_flop_jit,
}


def register_complexity_handles() -> bool:
    """Add the handles to mmengine's default FLOP and activation tables.

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
