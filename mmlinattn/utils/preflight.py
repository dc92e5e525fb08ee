# Copyright (c) mmlinattn contributors. All rights reserved.
"""Config checks run by ``tools/train.py`` / ``tools/test.py`` before the
Runner starts, so that common mistakes fail early with an error that names
the fix instead of deep inside a dataloader worker or an optimizer wrapper.
"""
import difflib
import os.path as osp
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, ConfigDict

DEMO_HINT = ('For the synthetic demo data run: python tools/misc/'
             'make_demo_data.py --out {root}')
REAL_HINT = ('Download the dataset and link it there (COCO: data/coco/, '
             'ADE20K: data/ade/ADEChallengeData2016/, ImageNet: '
             'data/imagenet/), or point the config at it with --cfg-options '
             '{key}.dataset.data_root=/path/to/data')


def _datasets(cfg: ConfigDict) -> Iterator[ConfigDict]:
    """A dataset config and every dataset nested in wrappers."""
    if not isinstance(cfg, dict):
        return
    yield cfg
    if isinstance(cfg.get('dataset'), dict):
        yield from _datasets(cfg['dataset'])
    for sub in cfg.get('datasets', []) or []:
        yield from _datasets(sub)


def _demo_root(path: str) -> Optional[str]:
    """``data/demo`` for a path inside the demo tree, else None."""
    parts = osp.normpath(path).split(osp.sep)
    if 'demo' in parts:
        return osp.sep.join(parts[:parts.index('demo') + 1])
    return None


def missing_data_paths(cfg: Config,
                       loader_keys: Tuple[str, ...]) -> List[str]:
    """Messages for every data root / annotation file the given dataloaders
    need but that does not exist."""
    problems = []
    for key in loader_keys:
        loader = cfg.get(key)
        if not loader or not isinstance(loader.get('dataset'), dict):
            continue
        for dataset in _datasets(loader['dataset']):
            root = dataset.get('data_root')
            paths = []
            if root:
                paths.append(('data_root', root))
            ann = dataset.get('ann_file')
            if ann:
                paths.append(('ann_file',
                              osp.join(root, ann) if root else ann))
            for kind, path in paths:
                if osp.exists(path):
                    continue
                demo = _demo_root(path)
                hint = DEMO_HINT.format(root=demo) if demo else \
                    REAL_HINT.format(key=key)
                problems.append(f'{key}: {kind} {path!r} does not exist. '
                                f'{hint}')
                break  # one message per dataset
    return problems


def _uses_syncbn(obj) -> bool:
    if isinstance(obj, dict):
        if obj.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            return True
        return any(_uses_syncbn(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_uses_syncbn(v) for v in obj)
    return False


def device_problems(cfg: Config, distributed: bool) -> List[str]:
    """GPU-only features requested on a machine without a GPU."""
    if torch.cuda.is_available():
        return []
    problems = []
    optim_wrapper = cfg.get('optim_wrapper') or {}
    if isinstance(optim_wrapper, dict) and \
            optim_wrapper.get('type') == 'AmpOptimWrapper':
        problems.append(
            'AMP (--amp or optim_wrapper.type="AmpOptimWrapper") needs a GPU: '
            "mmengine's AmpOptimWrapper only runs on CUDA/NPU/MLU/MUSA and "
            'no GPU is visible. Drop --amp (or set optim_wrapper.type='
            '"OptimWrapper") to train on the CPU.')
    if distributed and _uses_syncbn(cfg.get('model')):
        problems.append(
            'SyncBN needs GPUs (NCCL); this distributed run is on CPUs '
            '(gloo). Use norm_cfg=dict(type="BN") or train on GPUs.')
    return problems


def unknown_model_types(cfg: Config) -> List[str]:
    """``model.type`` / ``model.backbone.type`` that resolve in no registry
    of the config's scope, with the valid mmlinattn names."""
    from mmengine.registry import MODELS as ROOT_MODELS

    from mmlinattn.registry import MODELS
    model = cfg.get('model')
    if not isinstance(model, dict):
        return []
    problems = []
    scope = model.get('_scope_', cfg.get('default_scope', 'mmengine'))
    backbone = model.get('backbone')
    for where, part in (('model', model), ('model.backbone', backbone)):
        if not isinstance(part, dict) or not isinstance(
                part.get('type'), str):
            continue
        part_scope = part.get('_scope_', scope)
        with ROOT_MODELS.switch_scope_and_registry(part_scope) as registry:
            try:
                found = registry.get(part['type'])
            except KeyError:
                found = None
        if found is None:
            ours = sorted(n for n, c in MODELS.module_dict.items()
                          if 'backbones' in c.__module__)
            close = difflib.get_close_matches(
                part['type'].split('.')[-1], list(MODELS.module_dict), n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            problems.append(
                f'{where}.type={part["type"]!r} is not registered in scope '
                f'{part_scope!r} (is its package in custom_imports?).{hint} '
                f'mmlinattn backbones: {ours}')
    return problems


def check_config(cfg: Config, loader_keys: Tuple[str, ...],
                 distributed: bool) -> None:
    """Raise one error listing every problem found (model names, data and
    device)."""
    problems = unknown_model_types(cfg)
    problems += device_problems(cfg, distributed)
    problems += missing_data_paths(cfg, loader_keys)
    if problems:
        raise RuntimeError('Config check failed:\n  - ' +
                           '\n  - '.join(problems))
