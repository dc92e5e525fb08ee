# Copyright (c) mmlinattn contributors. All rights reserved.
"""Compiled ops (``mmlinattn._ext``) with pure-PyTorch references."""
from .depthwise_conv import depthwise_conv2d
from .ext_loader import ext_available, ext_has_cuda, reference_ops
from .focused_linear import (focused_linear_attention,
                             focused_linear_attention_backward,
                             focused_linear_attention_backward_reference,
                             focused_linear_attention_reference)
from .focusing import (focusing_backend, focusing_function,
                       focusing_function_reference)
from .gaussian_kernel import (gaussian_kernel, gaussian_kernel_matmul,
                              gaussian_kernel_matmul_reference,
                              gaussian_kernel_reference,
                              gaussian_kernel_t_matmul,
                              gaussian_kernel_t_matmul_reference, ops_backend,
                              sqdist, sqdist_reference)
from .newton_schulz import newton_schulz_steps, newton_schulz_steps_reference

__all__ = [
    'ext_available', 'ext_has_cuda', 'sqdist', 'sqdist_reference',
    'gaussian_kernel', 'gaussian_kernel_reference', 'gaussian_kernel_matmul',
    'gaussian_kernel_matmul_reference', 'gaussian_kernel_t_matmul',
    'gaussian_kernel_t_matmul_reference', 'reference_ops', 'ops_backend',
    'focusing_function', 'focusing_function_reference', 'focusing_backend',
    'depthwise_conv2d', 'newton_schulz_steps', 'newton_schulz_steps_reference',
    'focused_linear_attention', 'focused_linear_attention_reference',
    'focused_linear_attention_backward',
    'focused_linear_attention_backward_reference'
]
