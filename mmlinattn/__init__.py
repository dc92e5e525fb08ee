# Copyright (c) mmlinattn contributors. All rights reserved.
"""mmlinattn: linear-attention / softmax-free vision transformers for
OpenMMLab (SOFT, SOFT-Norm, FLatten, LITv2, UFO-ViT).

Importing the package registers every backbone and attention layer in
``mmlinattn.registry.MODELS`` and in mmengine's root ``MODELS``, allows
mmengine training checkpoints to load under ``torch.load(weights_only=True)``
and gives mmengine's complexity analysis the FLOP handles of our ops.
It never imports mmdet, mmseg or mmpretrain.
"""
import mmengine
from mmengine.utils import digit_version

from .version import (MMENGINE_MAXIMUM_VERSION, MMENGINE_MINIMUM_VERSION,
                      __version__, version_info)

_mmengine_version = digit_version(mmengine.__version__)
if not (digit_version(MMENGINE_MINIMUM_VERSION) <= _mmengine_version <
        digit_version(MMENGINE_MAXIMUM_VERSION)):
    raise ImportError(
        f'mmlinattn {__version__} needs mmengine>={MMENGINE_MINIMUM_VERSION},'
        f'<{MMENGINE_MAXIMUM_VERSION}, but mmengine=={mmengine.__version__} '
        'is installed. Fix: pip install "mmengine>=0.10.0,<1.0.0" '
        '(the tested pin is mmengine==0.10.7).')

from .utils.checkpoint import allow_mmengine_checkpoints  # noqa: E402
from .utils.flops import register_flop_handles  # noqa: E402

allow_mmengine_checkpoints()
register_flop_handles()

from . import engine, models  # noqa: E402,F401  (registers all modules)
from .models import *  # noqa: E402,F401,F403

__all__ = ['__version__', 'version_info', 'allow_mmengine_checkpoints']
__all__ += models.__all__
