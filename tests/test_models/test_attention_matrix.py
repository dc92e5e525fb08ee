# Copyright (c) mmlinattn contributors. All rights reserved.
"""Every attention in every host where the pair is meaningful: a training
step at 224 and at a non-square size; unsupported pairs fail at
construction with an error naming what the host lacks."""
import pytest
import torch

from mmlinattn.models.utils import attention_class
from mmlinattn.utils.attention_matrix import (ATTENTIONS, HOSTS, build_pair,
                                              supported)


@pytest.mark.parametrize('attention', sorted(ATTENTIONS))
@pytest.mark.parametrize('host', sorted(HOSTS))
def test_training_step_of_every_pair(host, attention):
    if not supported(host, attention):
        with pytest.raises(ValueError, match='from its host'):
            build_pair(host, attention, tiny=True)
        return
    torch.manual_seed(0)
    model = build_pair(host, attention, tiny=True, out_indices=(0, 1, 2, 3))
    model.train()
    layer_type = attention_class(ATTENTIONS[attention]['type'])
    layers = [m for m in model.modules() if isinstance(m, layer_type)]
    assert layers, f'no {layer_type.__name__} in {host}'
    for size in [(224, 224), (160, 224)]:
        model.zero_grad()
        outs = model(torch.randn(2, 3, *size))
        assert len(outs) == 4 and all(torch.isfinite(o).all() for o in outs)
        sum(o.square().mean() for o in outs).backward()
        grads = [p.grad for layer in layers for p in layer.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_paper_settings_are_the_default_pairs():
    """Without attn_cfg every host builds its paper's attention."""
    from mmlinattn.models import (LITv2, SOFT, FLattenCSWin, FLattenPVT,
                                  FLattenSwin)
    with torch.device('meta'):
        expected = {
            FLattenPVT('tiny'): {'FocusedLinearAttention'},
            FLattenSwin('tiny'): {'FocusedLinearAttention',
                                  'WindowAttention'},
            FLattenCSWin('tiny'): {'FocusedLinearAttention',
                                   'CSWinAttention'},
            LITv2('small'): {'HiLoAttention'},
            SOFT('tiny'): {'SoftmaxFreeAttention',
                           'SpatialReductionAttention'},
        }
    for model, names in expected.items():
        found = {
            type(block.attn).__name__
            for stage in model.stages for block in stage.blocks
            if block.attn is not None
        }
        assert found == names, type(model).__name__
