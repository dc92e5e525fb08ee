# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/deployment/pytorch2onnx.py: dynamic-shape ONNX export checked with
onnxruntime."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).parents[2]
TOOL = REPO / 'tools/deployment/pytorch2onnx.py'
TINY = "{'embed_dims':16,'depths':[1,1,1,1],'num_heads':[1,1,2,2]}"


def load_tool():
    spec = importlib.util.spec_from_file_location('pytorch2onnx', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module', params=['torchscript', 'dynamo'])
def exported(request, tmp_path_factory):
    """A tiny LITv2 (stage 3 with 4x4 HiLo windows, so maps are padded)
    with random DTM offsets, exported once per exporter at 2x3x128x160."""
    pytest.importorskip('onnxruntime')
    if request.param == 'dynamo':
        pytest.importorskip('onnxscript')
    from mmlinattn.models import LITv2
    tmp = tmp_path_factory.mktemp('onnx')
    torch.manual_seed(0)
    model = LITv2(
        dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
        out_indices=(0, 1, 2, 3),
        local_ws=(0, 0, 4, 1)).eval()
    for module in model.modules():
        if hasattr(module, 'conv_offset'):  # non-trivial deformations
            torch.nn.init.normal_(module.conv_offset.weight, std=0.5)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    ckpt = tmp / 'litv2_tiny.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in model.state_dict().items()}},
               ckpt)
    onnx_file = tmp / f'litv2_tiny_{request.param}.onnx'
    tool = load_tool()
    code = tool.main([
        'LITv2', '--arch', TINY, '--cfg-options', 'out_indices=(0,1,2,3)',
        'local_ws=(0,0,4,1)', '--checkpoint',
        str(ckpt), '--shape', '128x160', '--exporter', request.param,
        '--output-file',
        str(onnx_file)
    ])
    assert code == 0
    return model, onnx_file


@pytest.mark.parametrize('batch, hw', [(2, (128, 160)), (1, (97, 131)),
                                       (3, (64, 64)), (1, (29, 45))])
def test_onnxruntime_matches_pytorch_at_any_size(exported, batch, hw):
    """Sizes other than the traced one, odd sides (padding in the stem and
    in HiLo, flooring in DTM), one-window maps and batch 1."""
    import onnxruntime as ort
    model, onnx_file = exported
    session = ort.InferenceSession(
        str(onnx_file), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['input']
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
    got = session.run(None, {'input': x.numpy()})
    assert len(got) == 4
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_deform_conv_is_decomposed(exported):
    """torchvision's deform_conv2d has no ONNX exporter: the graph samples
    with GridSample and contains no custom-domain op."""
    import onnx
    graph = onnx.load(str(exported[1])).graph
    ops = {node.op_type for node in graph.node}
    domains = {node.domain for node in graph.node}
    assert 'GridSample' in ops
    assert domains <= {'', 'ai.onnx'}


def test_verify_flag_and_classifier_config(tmp_path, capsys):
    """--verify reports parity at the traced and extra shapes; a classifier
    config exports its logits."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('mmpretrain')
    tool = load_tool()
    onnx_file = tmp_path / 'cls.onnx'
    code = tool.main([
        str(REPO / 'configs/classification/litv2_small_8xb128_in1k.py'),
        '--part', 'model', '--arch', TINY, '--cfg-options',
        'model.head.in_channels=128', 'model.head.num_classes=10',
        '--shape', '96x96', '--exporter', 'torchscript', '--output-file',
        str(onnx_file), '--verify', '--verify-shapes', '65x77'
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'ok   2x96x96 logits (2, 10)' in out
    assert 'ok   1x65x77 logits (1, 10)' in out
    assert 'FAIL' not in out


def test_bad_requests():
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.main(['LITv2', '--batch', '1'])
    with pytest.raises(SystemExit):
        tool.parse_args(['LITv2', '--shape', '224'])


def test_other_backbone_with_position_embeddings(tmp_path, capsys):
    """The tool is generic: FLatten-PVTv2-b0 (interpolated positional
    encodings in its attention) exports by type + arch and holds at a size
    other than the traced one."""
    pytest.importorskip('onnxruntime')
    tool = load_tool()
    code = tool.main([
        'FLattenPVTv2', '--arch', 'b0', '--shape', '128x160', '--exporter',
        'torchscript', '--output-file',
        str(tmp_path / 'pvtv2_b0.onnx'), '--verify', '--verify-shapes',
        '96x128'
    ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'ok   2x96x128 feat0 (2, 256, 3, 4)' in out


# ------------------------------------------- FLatten-Swin and FLatten-CSwin
# Tiny models traced at 2x3x128x160: stage maps 32x40, 16x20, 8x10, 4x5.
# The windowed / striped stages (2 and 3, attn_type 'LLSS') then see
# * Swin, window 4: 8x10 padded to 8x12 and shifted; 4x5 padded to 4x8,
#   shift skipped (min side not larger than a window);
# * CSWin, split 4: 8x10 stripes padded to 8x12; 4x5 one global window.
# The checked sizes cross the size decisions both ways: at 64x64 stage 2
# is 4x4 (no padding, and Swin skips the shift there in eager mode, the
# other side of the threshold), at 97x131 it is 7x9 (Swin) / 6x9 (CSWin):
# padded, shifted; at 161x197 Swin's stage 3 is 6x7, so it shifts where the
# traced one did not.
SWIN_LIKE = {
    'FLattenSwin':
    (dict(embed_dims=16, depths=[1, 1, 2, 2],
          num_heads=[1, 1, 2, 2]), dict(window_size=4)),
    'FLattenCSWin':
    (dict(embed_dims=16, depths=[1, 1, 1, 1],
          num_heads=[2, 2, 2, 2]), dict(split_size=[1, 2, 4, 4])),
}


@pytest.fixture(scope='module', params=list(SWIN_LIKE))
def exported_swin_like(request, tmp_path_factory):
    """A tiny FLatten-Swin / FLatten-CSwin with non-zero positional tables
    (focused linear attention's ``positional_encoding`` is resized with the
    map), exported with dynamic batch, H, W (TorchScript exporter)."""
    pytest.importorskip('onnxruntime')
    import mmlinattn.models
    arch, options = SWIN_LIKE[request.param]
    tmp = tmp_path_factory.mktemp('onnx')
    torch.manual_seed(0)
    model = getattr(mmlinattn.models, request.param)(
        arch, out_indices=(0, 1, 2, 3), **options).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('positional_encoding', '.scale')):
                param.normal_(std=0.5)
    ckpt = tmp / 'model.pth'
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in model.state_dict().items()
            }
        }, ckpt)
    onnx_file = tmp / f'{request.param}.onnx'
    code = load_tool().main([
        request.param, '--arch',
        repr(arch).replace(' ', ''), '--cfg-options', 'out_indices=(0,1,2,3)',
        *(f"{k}={repr(v).replace(' ', '')}"
          for k, v in options.items()), '--checkpoint',
        str(ckpt), '--shape', '128x160', '--exporter', 'torchscript',
        '--output-file',
        str(onnx_file)
    ])
    assert code == 0
    return model, onnx_file


@pytest.mark.parametrize('batch, hw', [(2, (128, 160)), (1, (97, 131)),
                                       (3, (64, 64)), (1, (29, 45)),
                                       (1, (161, 197))])
def test_swin_like_onnxruntime_matches_pytorch_at_any_size(
        exported_swin_like, batch, hw):
    """Window padding / shift / region masks and stripe padding / key masks
    are decided in the graph: onnxruntime matches eager PyTorch at the
    traced size, a non-square odd size, a square one on the other side of
    the shift / padding decisions and a small one (1-pixel-high stage 3)."""
    import onnxruntime as ort
    model, onnx_file = exported_swin_like
    session = ort.InferenceSession(
        str(onnx_file), providers=['CPUExecutionProvider'])
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
    got = session.run(None, {'input': x.numpy()})
    assert len(got) == 4
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('hw, padded_hw, window, shift',
                         [((8, 10), (8, 12), (4, 4), 2),
                          ((7, 9), (8, 12), (4, 4), 2),
                          ((8, 8), (8, 8), (4, 4), 2),
                          ((4, 5), (4, 8), (4, 4), 0),
                          ((4, 4), (4, 4), (4, 4), 0),
                          ((9, 9), (14, 14), (7, 7), 3)])
def test_traceable_window_helpers_equal_eager(hw, padded_hw, window, shift):
    """The export-time mask and roll give the eager values exactly (a zero
    mask where eager mode has none)."""
    from mmlinattn.models.utils.window import (_traceable_region_mask,
                                               region_mask, roll_2d,
                                               shift_if_larger)
    cpu = torch.device('cpu')
    expected = region_mask(hw, padded_hw, window, shift, cpu)
    got = _traceable_region_mask(hw, padded_hw, window, torch.tensor(shift),
                                 cpu)
    if expected is None:
        expected = torch.zeros_like(got)
    assert torch.equal(got, expected)
    x = torch.randn(2, *padded_hw, 3)
    assert torch.equal(
        roll_2d(x, torch.tensor(shift)), torch.roll(x, (-shift, -shift),
                                                    (1, 2)))
    assert torch.equal(
        roll_2d(x, -torch.tensor(shift)), x.roll((shift, shift), (1, 2)))
    larger = int(shift_if_larger(hw, window[0], window[0] // 2, cpu))
    assert larger == (window[0] // 2 if min(hw) > window[0] else 0)
