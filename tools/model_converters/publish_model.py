# Copyright (c) mmlinattn contributors. All rights reserved.
"""Turn a training checkpoint into a release file.

Keeps ``state_dict`` and primitive ``meta`` (drops optimizer, param
schedulers and the message hub), so the result loads with
``torch.load(weights_only=True)`` everywhere, and renames it
``<name>_<YYYYMMDD>-<sha256[:8]>.pth`` (OpenMMLab convention).

    python tools/model_converters/publish_model.py in.pth out_name
"""
import argparse
import datetime
import hashlib
import os
import os.path as osp
from typing import Any

import torch

import mmlinattn  # noqa: F401  (allow-lists mmengine checkpoint classes)

PRIMITIVES = (str, int, float, bool, type(None))


def _primitive(value: Any) -> Any:
    """Keep what ``weights_only`` can load without allow-listing."""
    if isinstance(value, PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)):
        items = [_primitive(v) for v in value]
        return None if any(i is _DROP for i in items) else items
    if isinstance(value, dict):
        out = {k: _primitive(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _DROP}
    if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        return value.item()  # numpy / torch scalars
    return _DROP


_DROP = object()


def publish(in_file: str, out_name: str) -> str:
    checkpoint = torch.load(in_file, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    meta = _primitive(checkpoint.get('meta', {}))
    meta = {k: v for k, v in meta.items() if v is not None}
    meta['published_from'] = osp.basename(in_file)
    out_dir = osp.dirname(osp.abspath(out_name))
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.splitext(osp.basename(out_name))[0]
    tmp_file = osp.join(out_dir, f'.{stem}.tmp')
    torch.save({'state_dict': state_dict, 'meta': meta}, tmp_file)
    with open(tmp_file, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:8]
    date = datetime.date.today().strftime('%Y%m%d')
    final = osp.join(out_dir, f'{stem}_{date}-{sha}.pth')
    os.replace(tmp_file, final)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='training checkpoint')
    parser.add_argument('out_name', help='output path without date/hash')
    args = parser.parse_args()
    print(publish(args.in_file, args.out_name))


if __name__ == '__main__':
    main()
