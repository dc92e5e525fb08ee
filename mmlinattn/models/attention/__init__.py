# Copyright (c) mmlinattn contributors. All rights reserved.
"""Attention layers, one file each, registered in ``MODELS``."""

__all__ = []
