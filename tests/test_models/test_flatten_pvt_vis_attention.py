# Copyright (c) mmlinattn contributors. All rights reserved.
"""tools/visualization/vis_attention.py: the per-layer attention rows are
the weights the layers really apply, and the CLI draws one panel each."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmlinattn.models.attention import (FocusedLinearAttention,
                                        SpatialReductionAttention)
from mmlinattn.models.backbones.flatten_pvt import FLattenPVT

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(
    embed_dims=[16, 16, 32, 32],
    depths=[1, 1, 1, 1],
    num_heads=[1, 2, 2, 2],
    mlp_ratios=[2, 2, 2, 2])


@pytest.fixture(scope='module')
def vis():
    path = osp.join(REPO, 'tools', 'visualization', 'vis_attention.py')
    spec = importlib.util.spec_from_file_location('vis_attention', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('sr', [1, 2])
def test_focused_row_reproduces_the_layer(vis, sr):
    """sum_j a_ij v_j with the drawn weights equals the layer's attention
    output at query i (DWC and proj removed)."""
    torch.manual_seed(0)
    layer = FocusedLinearAttention(
        16, 2, key_grid=(6 // sr, 8 // sr), qkv_layout='q_kv',
        sr_ratio=sr).double()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0, 0.5)
    x = torch.randn(1, 48, 16, dtype=torch.float64)
    handler = vis.find_handler(layer)
    q, k, v, kv_hw = layer.project(x, (6, 8))
    with torch.no_grad():
        full = layer.attend(q, k, v, (6, 8), kv_hw) - layer._dwc(v, (6, 8))
    for query in (0, 13, 47):
        weights, key_hw = handler(layer, x, (6, 8), query)
        assert key_hw == kv_hw and weights.shape == (2, k.shape[1])
        assert (weights >= 0).all()
        torch.testing.assert_close(
            weights.sum(-1), torch.ones(2, dtype=torch.float64))
        heads = v[0].view(-1, 2, 8).transpose(0, 1)  # (h, n, d)
        got = (weights[:, None] @ heads)[:, 0].reshape(-1)
        # the layer's normaliser carries n * 1e-6: relative 1e-6 differences
        torch.testing.assert_close(got, full[0, query], rtol=1e-5, atol=1e-8)


def test_softmax_row_reproduces_the_layer(vis):
    layer = SpatialReductionAttention(16, 2, sr_ratio=2).double()
    x = torch.randn(1, 48, 16, dtype=torch.float64)
    weights, key_hw = vis.find_handler(layer)(layer, x, (6, 8), 20)
    assert key_hw == (3, 4)
    _, _, v, _ = layer.project(x, (6, 8))
    got = (weights[:, None] @ v[0])[:, 0].reshape(-1)
    with torch.no_grad():
        out = F.linear(
            layer(x, (6, 8)) - layer.proj.bias,
            torch.linalg.inv(layer.proj.weight))  # undo proj
    torch.testing.assert_close(got, out[0, 20])


def test_dwc_kernel_is_placed_around_the_query(vis):
    layer = FocusedLinearAttention(8, 1, kernel_size=3)
    with torch.no_grad():
        layer.dwc.weight.zero_()
        layer.dwc.weight[:, 0, 0, 2] = 1.  # top-right tap in every channel
    uniform = torch.full((1, 20), 1 / 20)
    out = vis.add_dwc_kernel(layer, uniform, (4, 5), query=1 * 5 + 1)
    out = out.view(4, 5)
    assert out.argmax() == 0 * 5 + 2  # row above, column to the right
    torch.testing.assert_close(out.sum(), torch.tensor(1.))


def test_query_index(vis):
    assert vis.query_index((0.5, 0.5), (64, 64), (16, 16)) == 8 * 16 + 8
    assert vis.query_index((63, 0), (64, 64), (4, 4)) == 3
    assert vis.query_index((0, 63), (64, 32), (8, 4)) == 7 * 4


def test_maps_follow_layers_and_heads(vis):
    model = FLattenPVT(
        arch=TINY, pretrain_img_size=64, attn_type='LSLL').eval()
    image = torch.randn(1, 3, 64, 48)
    maps = vis.attention_maps(model, image, (0.25, 0.75))
    assert [name for name, _ in maps
            ] == [f'stages.{i}.blocks.0.attn' for i in range(4)]
    assert [m.shape for _, m in maps] == [(16, 12), (2, 1), (4, 3), (2, 2)]
    for _, attn in maps:
        assert np.isclose(attn.sum(), 1, atol=1e-5)
    only = vis.attention_maps(
        model, image, (0.5, 0.5), layers=r'stages\.2', head=1)
    assert [name for name, _ in only] == ['stages.2.blocks.0.attn']


def test_cli_writes_one_panel_per_layer(vis, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3),
                                 dtype=np.uint8)).save(tmp_path / 'img.png')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'model = dict(backbone=dict(type="mmlinattn.FLattenPVT", '
                   f'arch={TINY!r}, pretrain_img_size=64))\n')
    source = FLattenPVT(arch=TINY, pretrain_img_size=64)
    ckpt = tmp_path / 'ckpt.pth'
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in source.state_dict().items()
            }
        }, ckpt)
    out = tmp_path / 'attn.png'
    names = vis.main([
        str(tmp_path / 'img.png'),
        str(out), '--config',
        str(cfg), '--checkpoint',
        str(ckpt), '--img-size', '64', '--query', '10', '50', '--dwc'
    ])
    assert len(names) == 4
    with Image.open(out) as png:
        assert png.format == 'PNG'
        assert png.size == (3 * 4 * 100, 3 * 2 * 100)  # 5 panels, 4 per row


def test_layers_called_differently_are_skipped_with_a_warning(vis):

    class ExternalQKV(FocusedLinearAttention):
        """Called as layer(q, k, v, hw), like FLatten-CSwin's L blocks."""

        def forward(self, q, k, v, hw):
            return self.attend(q, k, v, hw)

    class Net(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 8, 4, 4)
            self.cswin_like = ExternalQKV(8, 2, qkv_layout=None)
            self.global_attn = FocusedLinearAttention(8, 2)

        def forward(self, img):
            x = self.embed(img).flatten(2).transpose(1, 2)
            x = self.cswin_like(x, x, x, (4, 4))
            return self.global_attn(x, (4, 4))

    with pytest.warns(UserWarning, match='skipped cswin_like'):
        maps = vis.attention_maps(Net(), torch.randn(1, 3, 16, 16), (0.5, 0.5))
    assert [name for name, _ in maps] == ['global_attn']
