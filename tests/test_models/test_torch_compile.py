# Copyright (c) mmlinattn contributors. All rights reserved.
"""``torch.compile`` without graph breaks, for every backbone.

``torch._dynamo.explain`` must capture the tiny variant of every backbone
(and SOFT with the fused custom ops, SOFT-Norm with them and the exact
kernel op) as one graph, in eval
(forward) and in a training step (forward + ``loss.backward()`` inside the
explained function). Dynamo only traces ``Tensor.backward()`` with
``torch._dynamo.config.trace_autograd_ops = True`` (without it torch itself
always breaks there, whatever the model); the tests set it.

Values: compiled (``aot_eager``: dynamo + AOTAutograd with the fake
kernels and registered autograd of ``torch.ops.mmlinattn``, without
inductor's slow C++ codegen) equals eager. The inductor speed is in
docs/benchmarks.md (``tools/analysis_tools/benchmark_compile.py``).
"""
import importlib

import pytest
import torch
import torch._dynamo

from mmlinattn.models.attention.soft_attention import newton_schulz_inverse
from mmlinattn.ops import ext_available, reference_ops
from mmlinattn.registry import MODELS
from mmlinattn.testing import TINY_BACKBONES

gk_module = importlib.import_module('mmlinattn.ops.gaussian_kernel')

NO_EXT = 'mmlinattn._ext is not built (the custom ops need it)'
CASES = {name: (name, {}) for name in TINY_BACKBONES}
CASES.update({
    # the fused products (torch.ops.mmlinattn.gaussian_kernel_matmul)
    'SOFT-fused': ('SOFT', dict(kernel_impl='fused')),
    # Newton variant b with its back-off, the exact kernel of the landmarks
    # (torch.ops.mmlinattn.gaussian_sqdist) and the fused products
    'SOFT-Norm-fused': ('SOFT',
                        dict(
                            sym_norm=True,
                            kernel_method='exact',
                            kernel_impl='fused')),
})
NEEDS_EXT = {'SOFT-fused', 'SOFT-Norm-fused'}
# Dynamo unrolls the Newton-Schulz loop: 4 steps instead of 20 trace the
# same ops in a fifth of the time (the graph-break question is the same).
FAST = dict(SOFT=dict(newton_iter=4))


def build(case: str, seed: int = 0):
    name, extra = CASES[case]
    torch.manual_seed(seed)
    kwargs, _ = TINY_BACKBONES[name]
    kwargs = dict(kwargs, out_indices=(0, 1, 2, 3), **FAST.get(name, {}))
    return MODELS.build(dict(type=name, **dict(kwargs, **extra)))


def loss_of(outs):
    return sum(out.float().square().mean() for out in outs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        yield
    torch._dynamo.reset()


def assert_one_graph(explanation):
    reasons = [str(b.reason).splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1, reasons
    assert reasons == []


def case_param(case):
    marks = ([pytest.mark.skipif(not ext_available(), reason=NO_EXT)]
             if case in NEEDS_EXT else [])
    return pytest.param(case, marks=marks, id=case)


@pytest.mark.parametrize('case', [case_param(c) for c in CASES])
def test_no_graph_breaks(case):
    model = build(case)
    x = torch.randn(2, 3, 64, 64)

    def forward(x):
        with torch.no_grad():
            return model(x)

    model.eval()
    assert_one_graph(torch._dynamo.explain(forward)(x))

    def train_step(x):
        loss = loss_of(model(x))
        loss.backward()
        return loss.detach()

    model.train()
    assert_one_graph(torch._dynamo.explain(train_step)(x))
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize('case', [
    'FLattenPVT',
    pytest.param(
        'SOFT-Norm-fused',
        marks=pytest.mark.skipif(not ext_available(), reason=NO_EXT)),
])
def test_compiled_equals_eager(case):
    """Forward in eval, and loss and every gradient in a training step (the
    fused custom ops' backward, FLatten's focusing autograd.Function, the
    branch-free Newton back-off of SOFT-Norm)."""
    model = build(case)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    x = torch.randn(2, 3, 64, 64)

    model.eval()
    with torch.no_grad():
        for want, got in zip(model(x), compiled(x)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for fn in (model, compiled):
        model.zero_grad(set_to_none=True)
        loss = loss_of(fn(x))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in params]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=0)
    for got, want in zip(grads_c, grads_e):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('variant', ['b', 'b_per_matrix'])
def test_branch_free_newton_backoff_gives_identical_values(variant):
    """Compiled, the back-off of variant b always runs its 10 rounds (no
    data-dependent exit); the values are bit-identical to eager's early exit,
    with and without halvings (a batch far from and one close to the
    threshold). Eager runs the steps in their GEMM form too
    (``reference_ops``): compiled graphs never take the in-cache kernel,
    whose sums may round differently."""
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2, 3, 16, 4, generator=gen, dtype=torch.float64)
    dist = torch.cdist(points, points).square()
    # 7 halvings (batch-wide alpha) and none (close to the identity)
    stacks = [torch.exp(-0.5 * dist), torch.exp(-5 * dist)]
    compiled = torch.compile(
        newton_schulz_inverse, backend='eager', fullgraph=True)
    for mat in stacks:
        with reference_ops():
            want = newton_schulz_inverse(mat, 6, variant)
        got = compiled(mat, 6, variant)
        assert torch.equal(got, want)


@pytest.mark.skipif(not ext_available(), reason=NO_EXT)
def test_custom_ops_pass_opcheck():
    """Schema, fake kernels (shapes, dtypes, strides), registered autograd
    and AOT dispatch of ``torch.ops.mmlinattn``."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, grad=True):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64)
        return t.requires_grad_(grad)

    q, l, x = rand(2, 3, 9, 4), rand(2, 3, 5, 4), rand(2, 3, 5, 6)
    for apply_exp in (False, True):
        torch.library.opcheck(torch.ops.mmlinattn.gaussian_sqdist,
                              (q, l, apply_exp))
    torch.library.opcheck(torch.ops.mmlinattn.gaussian_kernel_matmul,
                          (q, l, x))
    torch.library.opcheck(torch.ops.mmlinattn.gaussian_kernel_matmul,
                          (q.detach().float(), l.detach().float(),
                           x.detach().float()))
    g = rand(2, 3, 9, 5, grad=False)
    torch.library.opcheck(torch.ops.mmlinattn.gaussian_sqdist_backward,
                          (g, q.detach(), l.detach(), None))
    for with_kb in (False, True):
        torch.library.opcheck(
            torch.ops.mmlinattn.gaussian_kernel_matmul_backward,
            (q.detach(), l.detach(), rand(2, 3, 9, 6, grad=False),
             x.detach(), with_kb))
