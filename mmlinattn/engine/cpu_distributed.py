# Copyright (c) mmlinattn contributors. All rights reserved.
"""Distributed training on machines without GPUs (gloo on CPU).

mmengine 0.10.7 cannot do this by itself: its pytorch launcher calls
``torch.cuda.set_device`` and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules. We initialise
the process group with gloo before the Runner (which then skips
``init_dist``) and wrap with a DDP subclass that drops ``device_ids`` for CPU
modules.
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel

from mmlinattn.registry import register_model_wrapper


@register_model_wrapper()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also wraps CPU modules.

    ``device_ids`` / ``output_device`` are dropped when the module's
    parameters live on the CPU (DDP requires ``device_ids=None`` there).
    """

    def __init__(self, module: torch.nn.Module, **kwargs):
        first_param = next(module.parameters(), None)
        if first_param is None or first_param.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)


def prepare_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Set up gloo distributed training when no GPU is visible.

    Initialises the default process group from the ``torchrun`` environment
    (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) and swaps the
    config's model wrapper for :class:`CPUDistributedDataParallel`, keeping
    its arguments. Returns True when it did so; with a GPU, or
    ``launcher='none'``, it does nothing and the Runner's own set-up is used.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'launcher={launcher!r} needs GPUs, and none is visible. On a '
            'CPU-only machine use tools/dist_train.sh (launcher "pytorch", '
            'gloo backend) or launcher "none".')
    if not dist.is_initialized():
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                               'MASTER_PORT') if k not in os.environ]
        if missing:
            raise RuntimeError(
                f'launcher "pytorch" needs the torchrun environment; '
                f'{missing} not set. Start with tools/dist_train.sh CONFIG '
                'NUM_PROCS (or torchrun --nproc_per_node=N).')
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    wrapper_cfg: Optional[dict] = cfg.get('model_wrapper_cfg')
    wrapper_cfg = dict(wrapper_cfg or {})
    wrapper_type = wrapper_cfg.get('type', 'MMDistributedDataParallel')
    if wrapper_type not in ('MMDistributedDataParallel',
                            'CPUDistributedDataParallel'):
        raise RuntimeError(
            f'model_wrapper_cfg.type={wrapper_type!r} is not supported on a '
            'machine without GPUs; remove it or use '
            'CPUDistributedDataParallel.')
    wrapper_cfg['type'] = 'CPUDistributedDataParallel'
    wrapper_cfg.setdefault('broadcast_buffers', False)
    wrapper_cfg.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper_cfg
    return True
