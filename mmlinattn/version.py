# Copyright (c) mmlinattn contributors. All rights reserved.
__version__ = '0.1.0'

# mmengine range this package is written against (checked at import time).
MMENGINE_MINIMUM_VERSION = '0.10.0'
MMENGINE_MAXIMUM_VERSION = '1.0.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse ``'0.1.0rc1'`` into ``(0, 1, 0, 'rc1')``."""
    parts = []
    for x in version_str.split('.'):
        if x.isdigit():
            parts.append(int(x))
        elif 'rc' in x:
            major, rc = x.split('rc')
            parts.extend([int(major), f'rc{rc}'])
    return tuple(parts)


version_info = parse_version_info(__version__)
