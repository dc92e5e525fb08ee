# Copyright (c) mmlinattn contributors. All rights reserved.
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmlinattn  # noqa: F401  (installs the allow-list)


class _Reach:
    """Pickles as getattr(target, name)."""

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


def test_message_hub_state_loads_weights_only(tmp_path):
    hub = MessageHub.get_instance('allowlist_test')
    for i in range(5):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('iter', np.int64(5))
    ckpt = dict(state_dict={'w': torch.ones(2)},
                message_hub=hub.state_dict(),
                meta=dict(seed=np.int64(0), ratio=np.float32(0.5)))
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.min() == pytest.approx(0.2) and buffer.current() == 0.2
    assert loaded['meta']['ratio'] == np.float32(0.5)


@pytest.mark.parametrize('target,name', [(torch.Tensor, 'tolist'),
                                         (HistoryBuffer, '__init__'),
                                         (np.ndarray, 'tofile')])
def test_getattr_stays_restricted(tmp_path, target, name):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Reach(target, name)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
