# Copyright (c) mmlinattn contributors. All rights reserved.
"""Shared plumbing of ``tools/model_converters/*2mmlinattn.py``.

* :func:`load_checkpoint` reads an official checkpoint file through a
  restricted unpickler: tensors, plain containers and numpy scalars are
  kept; every other class (a yacs ``CfgNode``, an argparse ``Namespace``, a
  class of a module that is not installed, ``os.system`` ...) becomes an
  inert :class:`StandIn` that records what was pickled. Nothing from the
  file is imported or run.
* :func:`select_weights` picks the state dict (EMA or raw) and strips
  ``module.``; :func:`file_says` reads what the file says about its model.
* :func:`check_strict` loads the converted weights into the backbone built
  on the meta device; :func:`save_converted` writes ``{'state_dict',
  'meta'}`` that loads with ``torch.load(weights_only=True)``.
* :func:`warn_if_pretrained_disagrees` warns when a backbone is initialised
  from a converted file whose ``meta['mmlinattn']`` says otherwise.

Only torch, numpy and mmengine are used here (no toolbox imports).
"""
import hashlib
import os
import os.path as osp
import pickle
import types
import warnings
import zipfile
from typing import (Any, BinaryIO, Callable, ClassVar, Dict, Iterable, List,
                    Mapping, Optional, Sequence, Set, Tuple, Type, Union)

import numpy as np
import torch
import torch.nn as nn
from torch._weights_only_unpickler import _get_allowed_globals

# ------------------------------------------------------------ safe loading


class StandIn(dict):
    """Inert placeholder for a pickled object whose class is not allowed.

    Subclasses are made per pickled ``module.name`` (:attr:`target`). An
    instance keeps what the file stored and nothing runs: constructor
    arguments (:attr:`args`), pickled state (:attr:`state`, e.g. the
    attributes of a ``Namespace``), appended items (:attr:`items`) and, as a
    dict, the items of dict subclasses (a yacs ``CfgNode``).
    """
    target: ClassVar[str] = ''

    def __new__(cls, *args: Any, **kwargs: Any) -> 'StandIn':
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        obj.items = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Iterable) -> None:
        self.items.extend(items)

    def __repr__(self) -> str:
        return f'<stand-in for {self.target}>'


_STAND_INS: Dict[str, Type[StandIn]] = {}


def stand_in_class(module: str, name: str) -> Type[StandIn]:
    """The :class:`StandIn` subclass for the pickled global
    ``module.name`` (one class per name)."""
    target = f'{module}.{name}'
    if target not in _STAND_INS:
        _STAND_INS[target] = type(name, (StandIn, ), {
            'target': target,
            '__module__': __name__
        })
    return _STAND_INS[target]


def _numpy_scalar(*args: Any) -> Any:
    """numpy's scalar reconstructor, returning the Python value."""
    value = _NUMPY_SCALAR(*args)
    return value.item() if isinstance(value, np.generic) else value


# numpy.core.multiarray.scalar (numpy 1.x) / numpy._core... (2.x)
_NUMPY_SCALAR: Callable = np.float64(0).__reduce__()[0]
# What torch's weights-only unpickler allows (tensors, storages, dtypes,
# OrderedDict, set, bytes ...) plus numpy dtypes and scalars (decoded to
# Python values) under their numpy 1.x and 2.x module names.
_ALLOWED: Dict[str, Any] = {
    **_get_allowed_globals(),
    'numpy.dtype': np.dtype,
    'numpy.core.multiarray.scalar': _numpy_scalar,
    'numpy._core.multiarray.scalar': _numpy_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; any other class or function
    becomes a :class:`StandIn` class, so calling or building it is inert."""

    def find_class(self, module: str, name: str) -> Any:
        target = f'{module}.{name}'
        if target in _ALLOWED:
            return _ALLOWED[target]
        return stand_in_class(module, name)


def _restricted_load(file: BinaryIO, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# A pickle-module stand-in for torch.load(pickle_module=...).
restricted_pickle = types.ModuleType(
    f'{__name__}.restricted_pickle',
    'pickle with find_class restricted to tensors and plain data')
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint file (any trainer's) without importing or running
    anything it names; see :class:`RestrictedUnpickler`."""
    checkpoint = torch.load(
        path,
        map_location='cpu',
        pickle_module=restricted_pickle,
        weights_only=False)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{path} holds a {type(checkpoint).__name__}, not a '
                        'checkpoint dict')
    return dict(checkpoint)


def stand_ins(obj: Any) -> List[str]:
    """Sorted names of the classes replaced by stand-ins anywhere in
    ``obj`` (to tell the user what was not loaded)."""
    found: Set[str] = set()
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, torch.Tensor):
            continue
        seen.add(id(item))
        if isinstance(item, StandIn):
            found.add(item.target)
            stack += [item.args, item.state, item.items]
        if isinstance(item, Mapping):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack += list(item)
    return sorted(found)


def field(obj: Any, path: str) -> Any:
    """``obj.a.b`` / ``obj['a']['b']`` for ``path='a.b'`` through dicts,
    stand-ins (dict items, then pickled attributes) and plain objects;
    ``None`` when absent."""
    for part in path.split('.'):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        elif isinstance(obj, StandIn) and isinstance(
                obj.state, Mapping) and part in obj.state:
            obj = obj.state[part]
        elif not isinstance(obj, StandIn) and part in getattr(
                obj, '__dict__', {}):
            obj = vars(obj)[part]
        else:
            return None
    return obj


# Where trainers record the model name: timm's CheckpointSaver ('arch' and
# the argparse 'args.model'), Swin-style yacs configs (FLatten, LITv2).
MODEL_NAME_FIELDS = ('arch', 'args.model', 'config.MODEL.NAME',
                     'config.MODEL.TYPE')


def file_says(checkpoint: Mapping) -> Dict[str, str]:
    """The model names a checkpoint file records, by field."""
    said = {}
    for path in MODEL_NAME_FIELDS:
        value = field(checkpoint, path)
        if isinstance(value, str) and value:
            said[path] = value
    return said


def describe_file(path: str, checkpoint: Mapping) -> str:
    """One line: the model names the file records and the classes read as
    stand-ins."""
    said = file_says(checkpoint)
    replaced = stand_ins(checkpoint)
    return (f'{path}: the file says {said or "nothing about its model"}' +
            (f'; read as inert stand-ins (not imported, not run): '
             f'{", ".join(replaced)}' if replaced else ''))


# ------------------------------------------------------- weights selection
def strip_prefix(state_dict: Mapping[str, torch.Tensor],
                 prefix: str = 'module.') -> Dict[str, torch.Tensor]:
    """Drop ``prefix`` (DDP's ``module.``) from the keys that have it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v
            for k, v in state_dict.items()}


def select_weights(checkpoint: Mapping,
                   keys: Sequence[str],
                   plain: bool = True,
                   context: str = '') -> Tuple[Dict[str, torch.Tensor], str]:
    """(the first of ``keys`` present, ``module.`` stripped; that key).

    With ``plain``, a checkpoint that is itself a state dict is accepted
    (source ``'<plain state dict>'``). ``context`` prefixes the error.
    """
    for key in keys:
        if isinstance(checkpoint.get(key), Mapping):
            return strip_prefix(checkpoint[key]), key
    if plain and checkpoint and all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return strip_prefix(checkpoint), '<plain state dict>'
    expected = f'one of the keys {list(keys)}' + (
        ' or a plain state dict' if plain else '')
    raise KeyError(f'{context}no weights found: expected {expected}; got '
                   f'keys {sorted(map(str, checkpoint))[:10]}')


def weights_kind(source: str) -> str:
    """``'EMA'`` for an EMA copy (``state_dict_ema``, ``model_ema``), else
    ``'raw'``."""
    return 'EMA' if 'ema' in source.lower() else 'raw'


# ------------------------------------------------------------ strict check
def strict_differences(model: nn.Module,
                       state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Missing, unexpected and mis-shaped keys of ``state_dict`` against
    ``model``."""
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted = {k: tuple(v.shape) for k, v in state_dict.items()}
    problems = [f'missing {k}' for k in sorted(have.keys() - wanted)]
    problems += [f'unexpected {k}' for k in sorted(wanted.keys() - have)]
    problems += [
        f'shape {k}: checkpoint {wanted[k]} vs model {have[k]}'
        for k in sorted(have.keys() & wanted) if have[k] != wanted[k]
    ]
    return problems


def build_on_meta(model_cls: Type[nn.Module], **kwargs: Any) -> nn.Module:
    """``model_cls(**kwargs)`` on the meta device (no memory, no init)."""
    with torch.device('meta'):
        return model_cls(**kwargs)


def check_strict(model_cls: Type[nn.Module],
                 state_dict: Mapping[str, torch.Tensor],
                 **kwargs: Any) -> nn.Module:
    """The meta-device ``model_cls(**kwargs)`` if ``state_dict`` loads into
    it strictly; else ``RuntimeError`` listing (up to 30) differences."""
    model = build_on_meta(model_cls, **kwargs)
    problems = strict_differences(model, state_dict)
    if problems:
        raise RuntimeError(
            f'the converted weights do not load strictly into '
            f'{model_cls.__name__}({kwargs}); {len(problems)} differences:'
            '\n  ' + '\n  '.join(problems[:30]))
    return model


def count_parameters(model: nn.Module,
                     state_dict: Mapping[str, torch.Tensor],
                     prefix: str = 'head.') -> int:
    """Parameters of ``model`` plus the tensors of ``state_dict`` under
    ``prefix`` (a classifier head outside the backbone)."""
    return sum(p.numel() for p in model.parameters()) + sum(
        v.numel() for k, v in state_dict.items() if k.startswith(prefix))


# ------------------------------------------------------------------ saving
_PRIMITIVES = (str, int, float, bool, type(None))


def _check_primitive(value: Any, where: str) -> None:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_primitive(item, f'{where}[{i}]')
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f'{where} has a non-str key {key!r}')
            _check_primitive(item, f'{where}[{key!r}]')
    elif not isinstance(value, _PRIMITIVES):
        raise TypeError(f'{where} is a {type(value).__name__}; meta must '
                        'hold only str/int/float/bool/None, lists and dicts')


def source_info(path: str) -> Dict[str, str]:
    """``source_file`` and ``source_sha256`` of a converted file."""
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            sha.update(chunk)
    return dict(source_file=osp.basename(path), source_sha256=sha.hexdigest())


def save_converted(path: str, state_dict: Mapping[str, torch.Tensor],
                   meta: Mapping[str, Any]) -> None:
    """Write ``{'state_dict', 'meta'}`` with plain tensors and primitive
    meta, so it loads with ``torch.load(weights_only=True)``."""
    _check_primitive(dict(meta), 'meta')
    for key, value in state_dict.items():
        if type(value) is not torch.Tensor:
            raise TypeError(f'state_dict[{key!r}] is a '
                            f'{type(value).__name__}, not a plain tensor')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({'state_dict': dict(state_dict), 'meta': dict(meta)}, path)


# ------------------------------------------- backbone vs. converted file
def pretrained_checkpoints(
        init_cfg: Optional[Union[dict, List[dict]]]) -> List[str]:
    """The ``checkpoint`` of every ``Pretrained`` entry of ``init_cfg``."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return [
        cfg['checkpoint'] for cfg in cfgs if isinstance(cfg, Mapping)
        and cfg.get('type') == 'Pretrained' and cfg.get('checkpoint')
    ]


def converted_meta(path: str) -> Optional[dict]:
    """``meta['mmlinattn']`` of a local checkpoint file (memory-mapped, so
    the tensors are not read), or ``None``."""
    if not osp.isfile(path):
        return None
    checkpoint = torch.load(
        path,
        map_location='cpu',
        weights_only=True,
        mmap=zipfile.is_zipfile(path))
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    found = meta.get('mmlinattn') if isinstance(meta, Mapping) else None
    return dict(found) if isinstance(found, Mapping) else None


def warn_if_pretrained_disagrees(init_cfg: Optional[Union[dict, List[dict]]],
                                 family: str, **settings: Any) -> None:
    """Warn, with the fix, for every setting of a ``family`` backbone
    (e.g. ``sym_norm=False``) that differs from what the ``meta['mmlinattn']``
    of a ``Pretrained`` checkpoint of ``init_cfg`` records."""
    for path in pretrained_checkpoints(init_cfg):
        meta = converted_meta(path)
        if meta is None or meta.get('family') != family:
            continue
        for key, value in settings.items():
            if key in meta and meta[key] != value:
                warnings.warn(
                    f'{family}({key}={value!r}) is initialised from {path}, '
                    f'whose meta says the weights are for {key}='
                    f'{meta[key]!r} (stated by {meta.get("stated_by", "?")}'
                    '): the outputs will be wrong. Fix: set '
                    f'{key}={meta[key]!r} in the backbone config (e.g. '
                    f'--cfg-options model.backbone.{key}={meta[key]!r}).')
