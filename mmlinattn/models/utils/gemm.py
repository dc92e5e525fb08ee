# Copyright (c) mmlinattn contributors. All rights reserved.
"""Linear layers whose CPU fp32 GEMMs run on oneDNN.

PyTorch sends an fp32 ``nn.Linear`` on the CPU to MKL's ``sgemm``; MKL picks
its AVX-512 kernels only on Intel processors, so on AMD's (the EPYC machines
this project is measured on) it runs 1.5-3x slower than oneDNN's AVX-512
``brg_matmul``, which PyTorch ships too (``torch.ops.mkldnn``, the kernel
Inductor's CPU backend uses). :class:`Linear` is ``nn.Linear`` with its
GEMMs (forward, input and weight gradients) on oneDNN where that applies;
:func:`linear`, :func:`matmul` and :func:`weight_grad` are the same GEMMs
for the layers' hand-written paths. Values equal ``F.linear``'s up to fp32
summation order (oneDNN's fp32 math is strict fp32, no reduced precision).
"""
from typing import ContextManager, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.utils.switch import ThreadSwitch

_ONEDNN = torch.backends.mkldnn.is_available()
# a weight gradient of two narrow layers (N, K < 256) over many rows is
# faster with MKL (0.6-0.95x on oneDNN at 25088 rows, measured)
_MIN_WEIGHT_GRAD_WIDTH = 256
_BLAS = ThreadSwitch()
_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)


def blas_gemm() -> ContextManager[None]:
    """Run the GEMMs of this module (this thread) through PyTorch's default
    BLAS path (MKL), e.g. to compare the two; values differ only by
    summation order. Keep backward inside the block too: activation
    checkpointing recomputes the forward then and must take the same
    path."""
    return _BLAS.turned_on()


def onednn_applies(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether the GEMM of these tensors runs on oneDNN: plain eager CPU
    fp32 tensors, oneDNN enabled in PyTorch, not inside :func:`blas_gemm`.
    Autocast, ``torch.compile``, tracing, ONNX export, dispatch modes
    (``FlopCounterMode``, fake tensors), tensor subclasses and functorch
    transforms see plain ``F.linear``."""
    # is_compiling() first: torch.compile sees only this branch
    if (torch.compiler.is_compiling() or not _ONEDNN or _BLAS
            or not torch.backends.mkldnn.enabled
            or torch.is_autocast_enabled('cpu')
            or torch._C._len_torch_dispatch_stack() > 0
            or torch.jit.is_tracing()):  # (ONNX export traces or compiles)
        return False
    return all(
        t is None or (type(t) in _PLAIN_TENSORS and t.device.type == 'cpu'
                      and t.dtype == torch.float32 and t.numel() > 0
                      and t.layout == torch.strided and not t.is_nested and
                      not torch._C._functorch.is_functorch_wrapped_tensor(t))
        for t in tensors)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    # the op reads the bias as dense (a strided or expanded one would be
    # read past its elements); inputs and weights may be strided
    if bias is not None:
        bias = bias.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (..., K) ``a`` and a (K, N) matrix ``b``."""
    return linear(a, b.t())


def weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad.T @ x`` over rows, contiguous: the weight gradient of a Linear
    with (M, N) output gradient ``grad`` and (M, K) input ``x``."""
    if (max(grad.shape[-1], x.shape[-1]) < _MIN_WEIGHT_GRAD_WIDTH
            or not onednn_applies(grad, x)):
        return grad.t() @ x
    # oneDNN is fastest with the smaller of N, K as its batch dimension
    if grad.shape[-1] <= x.shape[-1]:
        return _onednn_linear(grad.t(), x.t(), None)
    return _onednn_linear(x.t(), grad.t(), None).t().contiguous()


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with its three GEMMs on oneDNN. With ``create_graph``
    (grad mode on in backward) the backward runs as plain differentiable
    ops, so higher-order gradients are those of ``F.linear``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                weight_t: torch.Tensor,
                bias: Optional[torch.Tensor]) -> torch.Tensor:
        # weight_t = weight.t(), made outside: F.linear's autograd keeps
        # that view too (a later module.double() swaps the parameter's
        # data, not this step's), and as an input it stays connected to
        # weight for higher-order gradients
        need_x, need_w = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if need_w else None,
                              weight_t if need_x else None)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight_t = ctx.saved_tensors
        need_x, need_w, _, need_b = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1]) if need_w else None
        if torch.is_grad_enabled():  # create_graph: differentiable ops
            grad_x = grad @ weight_t.t() if need_x else None
            grad_w = g.t() @ x2 if need_w else None
        else:
            grad_x = linear(grad, weight_t) if need_x else None
            grad_w = weight_grad(g, x2) if need_w else None
        grad_b = g.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, None, grad_b


def linear(x: torch.Tensor,
           weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear``, with its GEMMs (forward, and the input and weight
    gradients) on oneDNN where :func:`onednn_applies`."""
    if not onednn_applies(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, weight.t(), bias)
    return _onednn_linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and init) whose eager CPU
    fp32 GEMMs run on oneDNN (see the module docstring); everywhere else it
    is ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

