# Copyright (c) mmlinattn contributors. All rights reserved.
"""Backbones, one file per model family, registered in ``MODELS``."""

__all__ = []
