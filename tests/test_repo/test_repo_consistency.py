# Copyright (c) mmlinattn contributors. All rights reserved.
"""The README's two commands, .ci/run, configs, metafiles and the pinned
environment stay consistent."""
import ast
import glob
import importlib.metadata as metadata
import os
import os.path as osp
import re
import sys

import pytest
import yaml
from mmengine.config import Config


def _quick_start_commands(repo_root):
    readme = open(osp.join(repo_root, 'README.md')).read()
    first = readme.split('\n## ', 2)[1]  # the first section
    block = re.search(r'```bash\n(.*?)```', first, re.S).group(1)
    return [line.split('#')[0].strip() for line in block.splitlines()
            if line.strip()]


def test_readme_has_two_commands_and_ci_runs_the_test_one(repo_root):
    demo_cmd, test_cmd = _quick_start_commands(repo_root)
    assert 'tools/setup_env.sh' in demo_cmd and 'tools/demo.py' in demo_cmd
    assert 'tools/setup_env.sh' in test_cmd and 'pytest' in test_cmd
    ci_lines = [line.strip() for line in
                open(osp.join(repo_root, '.ci', 'run')).read().splitlines()]
    assert test_cmd in ci_lines


def _configs(repo_root):
    return sorted(glob.glob(osp.join(repo_root, 'configs', '**', '*.py'),
                            recursive=True))


def _is_base(path):
    """``configs/_base_/**`` holds partial configs (a model, a dataset, a
    schedule) that the real configs inherit; they are not run on their
    own."""
    return '_base_' in path.split(os.sep)


def _local_bases(path):
    """The ``_base_`` entries of a config that are files in this repository
    (not ``mmdet::``-style package bases), as absolute paths."""
    tree = ast.parse(open(path).read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            bases = ast.literal_eval(node.value)
            bases = [bases] if isinstance(bases, str) else list(bases)
            return [
                osp.normpath(osp.join(osp.dirname(path), b)) for b in bases
                if '::' not in b
            ]
    return []


def test_every_base_config_is_used(repo_root):
    """Every file under configs/_base_ is inherited, directly or through
    another base, by at least one real config, and every local base a config
    names exists."""
    configs = [osp.normpath(p) for p in _configs(repo_root)]
    partial = {p for p in configs if _is_base(osp.relpath(p, repo_root))}
    assert partial, 'configs/_base_ is empty'
    reached, todo = set(), [p for p in configs if p not in partial]
    while todo:
        for base in _local_bases(todo.pop()):
            assert osp.isfile(base), base
            if base not in reached:
                reached.add(base)
                todo.append(base)
    unused = sorted(osp.relpath(p, repo_root) for p in partial - reached)
    assert not unused, f'no config inherits {unused}'


def test_config_basenames_unique(repo_root):
    names = [osp.basename(p) for p in _configs(repo_root)
             if '_base_' not in p]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates


def test_model_index_imports_every_metafile(repo_root):
    index = yaml.safe_load(open(osp.join(repo_root, 'model-index.yml')))
    imported = sorted(index['Import'])
    on_disk = sorted(
        osp.relpath(p, repo_root) for p in glob.glob(
            osp.join(repo_root, 'configs', 'metafiles', '*.yml')))
    assert imported == on_disk
    for metafile in imported:
        meta = yaml.safe_load(open(osp.join(repo_root, metafile)))
        for model in meta.get('Models', []):
            assert osp.isfile(osp.join(repo_root, model['Config'])), \
                f'{metafile}: {model["Name"]} -> {model["Config"]}'


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg', 'mmpretrain'])
def test_every_config_parses(repo_root, toolbox):
    """Every config of a toolbox parses, inherits its scope and names an
    mmlinattn backbone that resolves."""
    pytest.importorskip(toolbox)
    from mmengine.registry import MODELS as ROOT
    checked = 0
    for path in _configs(repo_root):
        if '_base_' in path:
            continue
        cfg = Config.fromfile(path)
        if cfg.get('default_scope') != toolbox:
            continue
        checked += 1
        backbone = cfg.model.get('backbone', {})
        assert 'mmlinattn' in cfg.get('custom_imports', {}).get(
            'imports', []), path
        with ROOT.switch_scope_and_registry(toolbox) as registry:
            assert registry.get(backbone['type']) is not None, path
    assert checked > 0


def test_pinned_environment_is_what_ci_expects(repo_root):
    """In the project's own .venv every pin of requirements/ci.txt holds, so
    toolbox tests cannot be skipped silently because an install broke."""
    venv = osp.realpath(osp.join(repo_root, '.venv'))
    if osp.realpath(sys.prefix) != venv:
        pytest.skip(f'not running in {venv} (the pinned CI environment)')
    for line in open(osp.join(repo_root, 'requirements', 'ci.txt')):
        line = line.split('#')[0].strip()
        if not line:
            continue
        name, _, version = line.partition('==')
        version = version.split(',')[0]
        installed = metadata.version(name)
        assert installed.split('+')[0] == version, (name, installed)
    import mmcv
    import mmcv.ops  # noqa: F401  (compiled ops load against this torch)
    import torch
    assert mmcv.__version__ == '2.1.0'
    assert '+cpu' not in torch.__version__
    for toolbox in ('mmdet', 'mmseg', 'mmpretrain'):
        __import__(toolbox)


def test_relative_links_in_the_docs_resolve(repo_root):
    """Every relative Markdown link of the README and docs/ names a file
    or folder inside the repository (raw benchmark records included), so
    that it resolves on a clean clone."""
    pages = [osp.join(repo_root, 'README.md')] + glob.glob(
        osp.join(repo_root, 'docs', '**', '*.md'), recursive=True)
    broken = []
    for page in pages:
        text = re.sub(r'```.*?```', '', open(page).read(), flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z][a-z0-9+.-]*:|#', target):
                continue  # a URL or an anchor on the same page
            path = osp.normpath(
                osp.join(osp.dirname(page),
                         target.split('#')[0]))
            inside = path.startswith(osp.join(osp.abspath(repo_root), ''))
            if not (inside and osp.exists(path)):
                broken.append(f'{osp.relpath(page, repo_root)}: {target}')
    assert pages and not broken, broken
