# Copyright (c) mmlinattn contributors. All rights reserved.
from .attention import *  # noqa: F401,F403
from .attention import __all__ as _attention_all
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones_all

__all__ = list(_attention_all) + list(_backbones_all)
