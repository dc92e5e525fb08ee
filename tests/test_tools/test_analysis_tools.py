# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/analysis_tools/{get_flops,benchmark,benchmark_attention}.py and
the FLOP handles of mmlinattn.utils.flops, on tiny cases. Speed is not
tested: the tools must run and write well-formed output."""
import csv
import importlib.util
import json
import math
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlinattn.models.attention import HiLoAttention, SoftmaxFreeAttention
from mmlinattn.ops import ext_available
from mmlinattn.utils.flops import register_flop_handles

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools', 'analysis_tools')


def load_tool(name):
    """Import tools/analysis_tools/<name>.py (the tools import each other
    as siblings, so their folder goes on sys.path)."""
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location(
        f'analysis_tool_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The tools' --threads sets torch's global thread count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_main(tool, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [tool.__file__] + argv)
    tool.main()


class OnGrid(nn.Module):

    def __init__(self, layer, hw):
        super().__init__()
        self.layer, self.hw = layer, hw

    def forward(self, x):
        return self.layer(x, self.hw)


def count(model, *inputs):
    from mmengine.analysis import FlopAnalyzer
    register_flop_handles()
    analyzer = FlopAnalyzer(model.eval(), inputs)
    analyzer.unsupported_ops_warnings(False)
    return analyzer.total(), analyzer.unsupported_ops()


# ----------------------------------------------------------- FLOP handles
def test_sdpa_handle_gives_the_vit_attention_benchmark_anchor():
    """HiLo(768, 12, ws 2, alpha 0.9) at 14x14: 298,296,320 MACs, the
    official ``flops()`` and the vit-attention-benchmark table (needs both
    SDPA calls counted)."""
    layer = HiLoAttention(768, 12, window_size=2, alpha=0.9)
    total, unsupported = count(
        OnGrid(layer, (14, 14)), torch.randn(1, 196, 768))
    assert 'aten::scaled_dot_product_attention' not in unsupported
    assert total == layer.flops(14, 14) == 298_296_320


def test_sdpa_handle_counts_both_matmuls_with_different_value_width():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7,
                                                   8), torch.randn(2, 3, 7, 4)

    class Attend(nn.Module):

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    total, _ = count(Attend(), q, k, v)
    assert total == 2 * 3 * 5 * 7 * (8 + 4)


def test_newton_handle_counts_two_cubic_matmuls_per_iteration():

    def total(iters):
        layer = SoftmaxFreeAttention(
            64, 2, sr_ratio=2, newton_iter=iters, kernel_impl='reference')
        flops, unsupported = count(
            OnGrid(layer, (14, 14)), torch.randn(3, 196, 64))
        assert not [op for op in unsupported if 'PythonOp' in op]
        return flops

    m, heads, batch = 7 * 7, 2, 3
    assert total(20) - total(10) == 2 * 10 * batch * heads * m**3


def test_deform_conv2d_handle_equals_the_dense_conv():
    from torchvision.ops import deform_conv2d

    class Deform(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 10, 2, stride=2)

        def forward(self, x, offset):
            return deform_conv2d(
                x, offset, self.conv.weight, self.conv.bias, stride=(2, 2))

    deform = Deform()
    x = torch.randn(1, 6, 8, 12)
    offset = torch.randn(1, 2 * 2 * 2, 4, 6)
    macs, unsupported = count(deform, x, offset)
    assert 'torchvision::deform_conv2d' not in unsupported
    assert macs == count(deform.conv, x)[0] == 4 * 6 * 10 * 6 * 2 * 2


# --------------------------------------------------------------- get_flops
def test_get_flops_backbone_with_classifier(tmp_path, monkeypatch):
    """SOFT-Tiny with a 1000-class head: 13.07M parameters (official
    count); the output JSON lists what was not counted and no custom
    autograd function is among it."""
    tool = load_tool('get_flops')
    out = tmp_path / 'flops.json'
    run_main(tool, [
        '--backbone', 'SOFT', '--arch', 'tiny', '--num-classes', '1000',
        '--shape', '64', '--out',
        str(out)
    ], monkeypatch)
    result = json.loads(out.read_text())
    assert round(result['params'] / 1e6, 2) == 13.07
    assert result['input_shape'] == [1, 3, 64, 64]
    assert result['flops'] > 0 and result['activations'] > 0
    assert not [op for op in result['not_counted'] if 'PythonOp' in op]


# Small SOFT of the demo configs, for the full-size Mask R-CNN config.
DEMO_SOFT = dict(
    embed_dims=[32, 64, 128, 128], num_heads=[1, 2, 4, 4], depths=[1, 1, 2, 1])
TOOLBOX_CASES = [
    ('mmpretrain', 'configs/classification/soft_demo_shapes.py', {}, (64, 64)),
    ('mmdet', 'configs/detection/retinanet_soft_demo_shapes.py', {}, (64, 96)),
    # two-stage: the RPN needs data samples with image shapes
    ('mmdet', 'configs/detection/mask_rcnn_soft_tiny_1x.py', {
        'model.backbone.arch': dict(DEMO_SOFT, _delete_=True),
        'model.neck.in_channels': [32, 64, 128, 128]
    }, (64, 96)),
    ('mmseg', 'configs/segmentation/fpn_soft_demo_shapes.py', {}, (64, 64)),
]


@pytest.mark.parametrize('toolbox, config, options, shape', TOOLBOX_CASES)
def test_get_flops_on_toolbox_configs(toolbox, config, options, shape):
    """The whole model of our config (network forward) and its backbone:
    consistent parameter counts, the model costs more than its backbone,
    and only mmcv's sampling ops (no MACs) stay uncounted."""
    pytest.importorskip(toolbox)
    tool = load_tool('get_flops')
    inputs = (torch.randn(1, 3, *shape), )
    model, kind = tool.build_model(
        osp.join(REPO, config), cfg_options=options, shape=shape)
    backbone, _ = tool.build_model(
        osp.join(REPO, config),
        cfg_options=options,
        backbone_only=True,
        shape=shape)
    full = tool.analyze(model, inputs)
    alone = tool.analyze(backbone, inputs)
    assert config in kind
    # two-stage: a fixed proposal count, as mmdet 2.x's dummy forward
    assert ('RPN NMS off' in kind) == ('mask_rcnn' in config)
    assert full['params'] == sum(p.numel() for p in model.parameters())
    assert alone['params'] == sum(p.numel()
                                  for p in model.backbone.parameters())
    assert full['flops'] > alone['flops'] > 0
    assert {op
            for op in full['not_counted'] if 'PythonOp' in op
            } <= {'prim::PythonOp.NMSop', 'prim::PythonOp.RoIAlignFunction'}


def test_get_flops_scales_with_the_input(monkeypatch):
    tool = load_tool('get_flops')
    model, _ = tool.build_model(
        backbone='UFOViT',
        arch='tiny',
        backbone_args=dict(out_type='featmap', out_indices=(0, 1, 2, 3)))
    small = tool.analyze(model, (torch.randn(1, 3, 64, 64), ))['flops']
    large = tool.analyze(model, (torch.randn(1, 3, 128, 128), ))['flops']
    # UFO-ViT is linear in the tokens: 4x the pixels -> ~4x the MACs
    assert 3.8 < large / small <= 4.01


def test_get_flops_rejects_ambiguous_requests():
    tool = load_tool('get_flops')
    with pytest.raises(ValueError, match='either a config file'):
        tool.build_model()
    with pytest.raises(ValueError, match='H or H W'):
        tool.parse_shape([1, 2, 3])


# --------------------------------------------------------------- benchmark
def test_benchmark_writes_json(tmp_path, monkeypatch):
    tool = load_tool('benchmark')
    out = tmp_path / 'bench.json'
    run_main(tool, [
        '--backbone', 'LITv2', '--arch', 'small', '--shape', '32', '48',
        '--batch-size', '2', '--warmup', '1', '--repeat', '3', '--iters', '2',
        '--threads', '1', '--device', 'cpu', '--out',
        str(out)
    ], monkeypatch)
    result = json.loads(out.read_text())
    assert result['input_shape'] == [2, 3, 32, 48]
    assert result['params'] == 27_075_000  # LITv2-S without its head
    timing = result['timing']
    assert (timing['repeats'], timing['iters_per_repeat']) == (3, 2)
    assert 0 < timing['min_s'] <= timing['median_s'] <= timing['max_s']
    assert result['img_per_s'] == pytest.approx(2 / timing['median_s'])
    assert result['peak_mem_mb'] >= 0
    assert result['threads'] == 1
    assert result['device'].endswith('(1 threads)')
    assert 'benchmark.py' in result['command']


def assert_paired_rows(rows, shapes, modes, candidate, baseline):
    """A paired tool's JSON rows: one per shape and mode, in order, with
    both times and a speed-up inside its min-max."""
    assert [(r['shape'], r['mode']) for r in rows] == [
        (shape, mode) for shape in shapes for mode in modes]
    for row in rows:
        assert row[f'{candidate}_ms'] > 0 and row[f'{baseline}_ms'] > 0
        assert row['speedup_min'] <= row['speedup'] <= row['speedup_max']


@pytest.mark.skipif(
    not ext_available(), reason='mmlinattn._ext is not built: the fused '
    'focusing kernel is what the tool times')
def test_benchmark_focusing_writes_paired_rows(tmp_path, monkeypatch):
    tool = load_tool('benchmark_focusing')
    out = tmp_path / 'focusing.json'
    run_main(tool, [
        '--shapes', '2x10x16', '1x7x5', '--repeat', '3', '--warmup', '1',
        '--out',
        str(out)
    ], monkeypatch)
    assert_paired_rows(
        json.loads(out.read_text())['rows'], [[2, 10, 16], [1, 7, 5]],
        ['forward', 'forward+backward'], 'fused', 'reference')
    run_main(tool, [
        '--attention', '--head-dims', '8', '--shapes', '2x10x16', '--repeat',
        '3', '--warmup', '1', '--out',
        str(out)
    ], monkeypatch)
    result = json.loads(out.read_text())
    assert result['op'] == 'focused_linear_attention'
    assert [row['heads'] for row in result['rows']] == [2, 2]
    assert_paired_rows(result['rows'], [[2, 10, 16]],
                       ['forward', 'forward+backward'], 'fused', 'reference')


@pytest.mark.skipif(
    not ext_available(), reason='mmlinattn._ext is not built: the compiled '
    'depthwise-conv weight gradient is what the tool times')
def test_benchmark_depthwise_conv_writes_paired_rows(tmp_path, monkeypatch):
    tool = load_tool('benchmark_depthwise_conv')
    out = tmp_path / 'dw.json'
    run_main(tool, [
        '--shapes', '2x16x8', '1x9x20', '--repeat', '3', '--warmup', '1',
        '--out',
        str(out)
    ], monkeypatch)
    result = json.loads(out.read_text())
    assert result['kernel_size'] == 5
    assert_paired_rows(result['rows'], [[2, 16, 8], [1, 9, 20]],
                       ['weight gradient', 'forward+backward'], 'compiled',
                       'onednn')
    with pytest.raises(SystemExit, match='3x3 kernels stay on oneDNN'):
        run_main(tool, ['--shapes', '1x9x4', '--kernel-size', '3'],
                 monkeypatch)


@pytest.mark.parametrize('conv_ffn,baseline,default', [
    (False, 'untiled', 'tiled'), (True, 'untiled', 'tiled'),
    (False, 'blas', 'onednn')
])
def test_benchmark_mlp_writes_paired_rows(tmp_path, monkeypatch, conv_ffn,
                                          baseline, default):
    tool = load_tool('benchmark_mlp')
    out = tmp_path / 'mlp.json'
    run_main(tool, [
        '--shapes', '2x64x8', '1x49x4', '--mlp-ratio', '2', '--repeat', '3',
        '--baseline', baseline, '--out', str(out)
    ] + (['--conv-ffn'] if conv_ffn else []), monkeypatch)
    result = json.loads(out.read_text())
    assert result['conv_ffn'] is conv_ffn and result['baseline'] == baseline
    assert_paired_rows(result['rows'], [[2, 64, 8], [1, 49, 4]],
                       ['forward', 'forward+backward'], default, baseline)
    with pytest.raises(SystemExit, match='not a square grid'):
        run_main(tool, ['--shapes', '1x50x4'], monkeypatch)


def test_token_shapes_of_the_benchmark_tools_are_checked():
    from mmlinattn.utils.benchmarking import parse_token_shape
    assert parse_token_shape('8x3136x64') == (8, 3136, 64)
    with pytest.raises(Exception, match='BxNxC'):
        parse_token_shape('8x64')


def test_benchmark_train_mode_runs_backward_through_every_output(
        tmp_path, monkeypatch):
    """``--mode train`` times training steps: the model is in train mode
    and every output level reaches the loss (each level's own parameters
    get a gradient)."""
    import mmlinattn.utils.model_builder as model_builder

    class TwoLevels(nn.Module):

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.level2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.unused = nn.Linear(4, 4)
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            x = self.stem(x)
            return x, {'level2': [self.level2(x)]}

    model = TwoLevels().eval()
    monkeypatch.setattr(model_builder, 'build_model',
                        lambda *args, **kwargs: (model, 'two levels'))
    tool = load_tool('benchmark')
    out = tmp_path / 'train.json'
    run_main(tool, [
        '--backbone', 'ignored', '--mode', 'train', '--shape', '8',
        '--warmup', '0', '--repeat', '2', '--iters', '1', '--device', 'cpu',
        '--out',
        str(out)
    ], monkeypatch)
    result = json.loads(out.read_text())
    assert result['mode'] == 'train'
    assert model.modes == [True, True]
    assert model.stem.weight.grad is not None
    assert model.level2.weight.grad.abs().sum() > 0
    assert model.unused.weight.grad is None
    assert result['timing']['repeats'] == 2


@pytest.mark.skipif(
    not osp.exists('/proc/self/status'),
    reason='CPU peak memory is read from /proc (Linux)')
def test_peak_memory_measures_a_cpu_allocation():
    tool = load_tool('benchmark')
    memory = tool.PeakMemory(torch.device('cpu'))
    memory.reset()
    block = torch.ones(16 * 2**20)  # 64 MiB, touched
    del block
    peak = memory.peak_bytes() / 2**20
    assert 60 < peak < 80


def test_time_fn_median_and_auto_iterations():
    tool = load_tool('benchmark')
    calls = []
    timing = tool.time_fn(
        lambda: calls.append(1),
        torch.device('cpu'),
        warmup=2,
        repeat=3,
        iters=0,
        min_repeat_s=1e-4)
    assert timing['iters_per_repeat'] >= 1
    assert len(calls) == 2 + 3 * timing['iters_per_repeat']
    assert timing['min_s'] <= timing['median_s'] <= timing['max_s']


# ----------------------------------------------------- benchmark_attention
def test_fit_exponent_and_extrapolation():
    tool = load_tool('benchmark_attention')
    points = [(n, 3e-3 * n**1.5) for n in (100, 400, 1600, 6400)]
    k, n = tool.fit_exponent(points, 400, 6400)
    assert n == 3 and k == pytest.approx(1.5)
    assert tool.fit_exponent(points, 1, 100) == (None, 1)
    # from the last two points, exponent clamped to [1, max_k]
    assert tool._extrapolate(points, 25600,
                             3.) == pytest.approx(3e-3 * 25600**1.5)
    assert tool._extrapolate([(10, 1.), (20, 100.)], 40, 2.) == 400.
    assert tool._extrapolate([(10, 5.)], 20, 2., floor=16.) is None


def test_budget_notes():
    tool = load_tool('benchmark_attention')
    opts = dict(tool.DEFAULTS, mem_budget=4., time_budget=60.)
    linear = [(100, 10., 100.), (400, 40., 400.)]  # ms and MiB ~ N
    assert tool._budget_note(linear, 1600, 'forward', opts) is None
    # 400 MiB * 16 = 6.25 GB at 6400 tokens
    assert tool._budget_note(linear, 6400, 'forward',
                             opts) == 'est. 6.2 GB > budget 4 GB'
    quadratic = [(100, 10., 1.), (200, 40., 1.)]  # ms ~ N^2, tiny memory
    # 30 passes of 40 ms * 4^2
    assert tool._budget_note(quadratic, 800, 'vab', opts) is None
    assert tool._budget_note(quadratic, 1600, 'vab',
                             opts) == 'est. 77 s > budget 60 s'


def test_every_layer_builds_and_keeps_the_token_shape():
    tool = load_tool('benchmark_attention')
    opts = {**tool.DEFAULTS, **tool.PRESETS['scaling']}
    opts.update(embed_dims=32, num_heads=2)
    x = torch.randn(2, 15 * 17, 32)
    for name in tool.ATTENTIONS:
        layer = tool.build_attention(name, (15, 17), opts).eval()
        with torch.no_grad():
            assert layer(x).shape == x.shape, name
        assert tool.describe(name, opts)


def test_out_of_memory_is_recorded(monkeypatch):
    tool = load_tool('benchmark_attention')

    def failing_build(*args):
        raise RuntimeError('DefaultCPUAllocator: can\'t allocate memory: '
                           'you tried to allocate 17800000000 bytes.')

    monkeypatch.setattr(tool, 'build_attention', failing_build)
    case = {**tool.DEFAULTS, **tool.PRESETS['scaling']}
    case.update(
        attention='msa',
        hw=(8, 8),
        mode='forward',
        dtype='fp32',
        device='cpu',
        threads=None,
        flops=False,
        mem_budget=None)
    record = tool.run_case(case)
    assert record['status'] == 'oom'
    assert 'allocate' in record['note']


def test_benchmark_attention_end_to_end(tmp_path):
    """Two layers at two grids, each case in its own process: CSV rows,
    MAC counts, fitted exponents, tables, plots and metadata."""
    tool = load_tool('benchmark_attention')
    out = tmp_path / 'bench'
    tool.main([
        '--attentions', 'msa', 'xnorm', '--grids', '8x8', '12x16', '--modes',
        'forward', '--embed-dims', '16', '--num-heads', '2', '--warmup', '1',
        '--repeat', '2', '--threads', '1', '--device', 'cpu', '--fit-range',
        '64', '192', '--out-dir',
        str(out)
    ])
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert {(r['attention'], r['grid'], r['mode'])
            for r in rows} == {(a, g, 'forward')
                               for a in ('msa', 'xnorm')
                               for g in ('8x8', '12x16')}
    assert len(rows) == 4
    for r in rows:
        assert r['status'] == 'ok', r
        ms, ips = float(r['ms_median']), float(r['img_per_s'])
        assert 0 < float(r['ms_min']) <= ms <= float(r['ms_max'])
        assert ips == pytest.approx(1e3 / ms, rel=1e-3)
        assert float(r['peak_mem_mb']) >= 0
        assert int(r['tokens']) == math.prod(map(int, r['grid'].split('x')))
    macs = {(r['attention'], r['grid']): int(r['macs']) for r in rows}
    # MSA: qkv + proj (4 N C^2) and the two attention matmuls (2 N^2 C)
    assert macs['msa', '12x16'] == 4 * 192 * 16**2 + 2 * 192**2 * 16
    # XNorm: qkv + proj and K^T V, Q (K^T V) (2 N C d): linear in N
    assert macs['xnorm', '12x16'] == 3 * macs['xnorm', '8x8']
    with open(out / 'scaling.csv') as f:
        scaling = list(csv.DictReader(f))
    assert [(s['attention'], s['points']) for s in scaling] == [('msa', '2'),
                                                                ('xnorm', '2')]
    assert all(math.isfinite(float(s['k'])) for s in scaling)
    # MACs of XNorm triple with the tokens: k_MACs = 1 exactly
    assert float(scaling[1]['macs_k']) == pytest.approx(1.0, abs=1e-3)
    assert float(scaling[0]['macs_k']) > 1.2  # MSA's N^2 term
    assert '| msa |' in (out / 'results.md').read_text()
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['threads'] == 1 and 'loadavg_after' in meta
    assert meta['options']['malloc_cache'] is True
    assert set(meta['layers']) == {'msa', 'xnorm'}
    for name in ('time.png', 'memory.png'):
        assert (out / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('mode', ['train', 'vab'])
def test_training_modes_run(mode):
    tool = load_tool('benchmark_attention')
    case = {**tool.DEFAULTS, **tool.PRESETS['scaling']}
    case.update(
        attention='hilo',
        hw=(6, 10),
        mode=mode,
        dtype='fp32',
        device='cpu',
        embed_dims=16,
        num_heads=2,
        warmup=1,
        repeat=2,
        vab_passes=3,
        threads=None,
        flops=True,
        mem_budget=None)
    record = tool.run_case(case)
    assert record['status'] == 'ok'
    assert 0 < record['ms_min'] <= record['ms_median'] <= record['ms_max']
    assert record['peak_mem_mb'] >= 0
    assert 'macs' not in record  # counted for the forward mode only


def test_budgets_skip_instead_of_running(tmp_path):
    """The larger grid is estimated beyond a tiny time budget and recorded
    as skipped, with the estimate; the smaller one runs."""
    tool = load_tool('benchmark_attention')
    opts = tool.resolve_options(
        tool.parse_args([
            '--attentions', 'msa', '--grids', '8x8', '64x64', '--modes',
            'forward', '--embed-dims', '16', '--num-heads', '2', '--warmup',
            '1', '--repeat', '1', '--threads', '1', '--time-budget', '1e-3',
            '--no-flops', '--device', 'cpu'
        ]))
    rows = tool.run_benchmark(opts, log=lambda line: None)
    assert [r['status'] for r in rows] == ['ok', 'skipped']
    assert rows[1]['note'].startswith('est. ') and 'budget' in rows[1]['note']


def test_benchmark_newton_runs_and_counts_saved_memory(tmp_path, capsys):
    tool = load_tool('benchmark_newton')
    out = tmp_path / 'newton.json'
    assert tool.main(['--cases', '6x8', '--iters', '3', '--repeat', '1',
                      '--threads', '1', '--device', 'cpu', '--out',
                      str(out)]) == 0
    results = json.loads(out.read_text())['results']
    assert [(r['m'], r['mode']) for r in results] == [(8, 'forward'),
                                                       (8, 'train')]
    for r in results:
        assert r['official_ms'] > 0 and r['fused_ms'] > 0 and r['gemm_ms'] > 0
    train = results[1]
    # the GEMM form keeps V and V A of every step (6 matrices of 8 x 8
    # float32 each), the compiled node only V0 and A (plus the few values
    # the tool's V0 = A / max row-sum^2 keeps)
    stack_mib = 6 * 8 * 8 * 4 / 2**20
    assert train['gemm_saved_mib'] >= 3 * 2 * stack_mib
    assert 2 * stack_mib <= train['fused_saved_mib'] < 3 * stack_mib
    assert train['official_saved_mib'] > 0
    assert '6x8' in capsys.readouterr().out


def test_backbone_of_another_toolbox_as_baseline():
    """``--backbone mmpretrain.SwinTransformer`` builds the toolbox's own
    module (its registry imported on demand; its ``train()`` returns None,
    so the tool must not chain ``.eval()``); an unknown scope names the fix.
    """
    tool = load_tool('get_flops')
    model, kind = tool.build_model(
        backbone='mmpretrain.SwinTransformer', arch='tiny')
    assert type(model).__module__.startswith('mmpretrain.')
    assert not model.training and 'SwinTransformer' in kind
    with pytest.raises(ValueError, match='cannot import nosuch.registry'):
        tool.build_model(backbone='nosuch.Thing')


def test_time_paired_alternates_the_order_every_round():
    from mmlinattn.utils.benchmarking import time_paired
    order = []
    times = time_paired({
        'a': lambda: order.append('a'),
        'b': lambda: order.append('b')
    },
                        repeat=3,
                        iters=2,
                        warmup=1)
    assert order == ['a', 'b'] + ['a'] * 2 + ['b'] * 2 + ['b'] * 2 + [
        'a'
    ] * 2 + ['a'] * 2 + ['b'] * 2
    assert [len(t) for t in times.values()] == [3, 3]
    assert all(s >= 0 for t in times.values() for s in t)
