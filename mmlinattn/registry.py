# Copyright (c) mmlinattn contributors. All rights reserved.
"""Registries of mmlinattn.

``MODELS`` is a child of mmengine's root ``MODELS`` with scope ``mmlinattn``
(so ``type='mmlinattn.SOFT'`` resolves from every OpenMMLab toolbox), and
:func:`register_model` additionally registers each public class in the root
registry so that the unprefixed ``type='SOFT'`` resolves too: mmdet, mmseg
and mmpretrain registries are siblings that only consult their parent chain
(see ``spec/openmmlab.md`` §3).
"""
import difflib
from typing import Callable, Optional, Type

from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry


class _ListingRegistry(Registry):
    """A registry whose failed look-ups name the registered modules (and the
    closest match) instead of returning ``None`` silently."""

    def get(self, key: str) -> Optional[Type]:
        obj = super().get(key)
        if obj is None:
            names = sorted(self.module_dict)
            close = difflib.get_close_matches(
                key.split('.')[-1], names, n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            raise KeyError(f'{key!r} is not registered in {self.scope}::'
                           f'{self.name}.{hint} Valid names: {names}')
        return obj

    def __contains__(self, key: str) -> bool:
        try:
            return super().get(key) is not None
        except KeyError:
            return False


MODELS = _ListingRegistry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmlinattn',
    locations=['mmlinattn.models'])

MODEL_WRAPPERS = _ListingRegistry(
    'model_wrapper',
    parent=MMENGINE_MODEL_WRAPPERS,
    scope='mmlinattn',
    locations=['mmlinattn.engine'])


def _register_both(child: Registry, root: Registry, cls: Type,
                   name: Optional[str]) -> Type:
    key = name or cls.__name__
    for registry in (child, root):
        existing = registry.module_dict.get(key)
        if existing is cls or (existing is not None
                               and existing.__module__ == cls.__module__
                               and existing.__qualname__ == cls.__qualname__):
            # Same class imported twice (e.g. a module reload): replace.
            registry.register_module(name=key, module=cls, force=True)
        elif existing is not None:
            raise KeyError(
                f'mmlinattn cannot register {cls.__module__}.'
                f'{cls.__qualname__} as {key!r} in the {registry.scope!r} '
                f'registry: {existing.__module__}.{existing.__qualname__} '
                'already uses that name. Pick a unique name.')
        else:
            registry.register_module(name=key, module=cls)
    return cls


def register_model(cls: Optional[Type] = None,
                   *,
                   name: Optional[str] = None) -> Callable:
    """Register a public model class in ``mmlinattn`` and root ``MODELS``.

    Use as ``@register_model()`` or ``@register_model(name='X')``.
    """
    if cls is not None:
        return _register_both(MODELS, MMENGINE_MODELS, cls, name)
    return lambda c: _register_both(MODELS, MMENGINE_MODELS, c, name)


def register_model_wrapper(cls: Optional[Type] = None,
                           *,
                           name: Optional[str] = None) -> Callable:
    """Register a model wrapper in ``mmlinattn`` and root wrappers."""
    if cls is not None:
        return _register_both(MODEL_WRAPPERS, MMENGINE_MODEL_WRAPPERS, cls,
                              name)
    return lambda c: _register_both(MODEL_WRAPPERS, MMENGINE_MODEL_WRAPPERS,
                                    c, name)
