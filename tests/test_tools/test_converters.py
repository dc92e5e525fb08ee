# Copyright (c) mmlinattn contributors. All rights reserved.
"""The three converters on official-layout files that pickle objects of a
module that is not installed (a yacs-like ``CfgNode``, a function call that
would run on unpickling, ``os.system``), an argparse ``Namespace`` and
numpy scalars, through the one restricted loader of
:mod:`mmlinattn.utils.converter`; SOFT vs SOFT-Norm is never guessed."""
import argparse
import importlib
import importlib.util
import os.path as osp
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest
import torch

from mmlinattn.models.backbones.flatten_cswin import (
    FLattenCSWin, flatten_cswin_to_official)
from mmlinattn.models.backbones.flatten_pvt import (FLattenPVT, FLattenPVTv2,
                                                    flatten_pvt_to_official)
from mmlinattn.models.backbones.flatten_swin import (FLattenSwin,
                                                     flatten_swin_to_official)
from mmlinattn.models.backbones.litv2 import (LITv2, convert_litv2_official)
from mmlinattn.models.backbones.litv2 import to_official as litv2_to_official
from mmlinattn.models.backbones.soft import (SOFT, convert_soft_official,
                                             convert_soft_to_official)
from mmlinattn.utils import converter

REPO = Path(__file__).parents[2]
FAKE_PACKAGE = 'yacs_fake'
FAKE_MODULE = '''
import os


class CfgNode(dict):
    """yacs-like config node: a dict with attribute access."""

    def __getattr__(self, name):
        return self[name]

    def __setattr__(self, name, value):
        self[name] = value


def touch(path):
    open(path, 'w').close()


class Trap:
    """Unpickling runs touch(path)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return touch, (self.path, )


class Shell:
    """Unpickling runs os.system('touch path')."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, ('touch ' + self.path, )
'''


def load_tool(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        name, REPO / 'tools' / 'model_converters' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_with_foreign_objects(path: Path, tmp_path: Path,
                              build: Callable[[Any], Dict]) -> None:
    """``torch.save(build(fake_module), path)`` while a package
    ``yacs_fake`` exists, then delete it: the file refers to a module that
    is not installed."""
    root = tmp_path / 'site'
    (root / FAKE_PACKAGE).mkdir(parents=True)
    (root / FAKE_PACKAGE / '__init__.py').write_text('')
    (root / FAKE_PACKAGE / 'config.py').write_text(FAKE_MODULE)
    sys.path.insert(0, str(root))
    try:
        fake = importlib.import_module(f'{FAKE_PACKAGE}.config')
        torch.save(build(fake), path)
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split('.')[0] == FAKE_PACKAGE:
                del sys.modules[name]
        shutil.rmtree(root)
        importlib.invalidate_caches()
    assert importlib.util.find_spec(FAKE_PACKAGE) is None


def trainer_extras(fake: Any, tmp_path: Path, model_name: str) -> Dict:
    """What training scripts pickle next to the weights."""
    config = fake.CfgNode()
    config.MODEL = fake.CfgNode()
    config.MODEL.NAME = model_name
    config.TRAIN = fake.CfgNode(BASE_LR=1e-3)
    return dict(
        config=config,
        args=argparse.Namespace(model=model_name, lr=1e-3),
        max_accuracy=np.float64(81.25),
        epoch=np.int64(299),
        finished=np.bool_(True),
        trap=fake.Trap(str(tmp_path / 'trap_ran')),
        shell=fake.Shell(str(tmp_path / 'shell_ran')),
        optimizer=dict(state={}, param_groups=[dict(lr=1e-5, params=[0])]))


def assert_nothing_ran(tmp_path: Path) -> None:
    assert not (tmp_path / 'trap_ran').exists()
    assert not (tmp_path / 'shell_ran').exists()


def random_state(model: torch.nn.Module,
                 head_dims: int = 0) -> Dict[str, torch.Tensor]:
    """Random ``backbone.*`` values for the state dict of a meta-device
    ``model`` (+ a 10-class ``head.fc`` on ``head_dims`` features)."""
    gen = torch.Generator().manual_seed(0)
    state = {
        f'backbone.{k}': torch.randn(v.shape, generator=gen)
        if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
        for k, v in model.state_dict().items()
    }
    if head_dims:
        state['head.fc.weight'] = torch.randn(10, head_dims, generator=gen)
        state['head.fc.bias'] = torch.randn(10, generator=gen)
    return state


# ------------------------------------------------------------- the loader
def test_loader_keeps_data_and_replaces_the_rest(tmp_path):
    src = tmp_path / 'official.pth'
    weights = {'w': torch.arange(6.).reshape(2, 3)}
    save_with_foreign_objects(
        src, tmp_path,
        lambda fake: dict(model=weights, **trainer_extras(
            fake, tmp_path, 'flatten_pvt_tiny')))
    with pytest.raises(Exception, match='yacs_fake|Unsupported|Weights'):
        torch.load(src, weights_only=True)  # the default loader gives up

    checkpoint = converter.load_checkpoint(str(src))
    assert_nothing_ran(tmp_path)
    assert torch.equal(checkpoint['model']['w'], weights['w'])
    assert (checkpoint['max_accuracy'], checkpoint['epoch'],
            checkpoint['finished']) == (81.25, 299, True)
    assert [type(checkpoint[k]) for k in ('max_accuracy', 'epoch',
                                          'finished')] == [float, int, bool]
    assert checkpoint['optimizer']['param_groups'][0]['lr'] == 1e-5
    config, args = checkpoint['config'], checkpoint['args']
    assert isinstance(config, converter.StandIn)
    assert config.target == f'{FAKE_PACKAGE}.config.CfgNode'
    assert converter.field(checkpoint, 'config.MODEL.NAME') == \
        'flatten_pvt_tiny'
    assert converter.field(checkpoint, 'config.TRAIN.BASE_LR') == 1e-3
    assert args.target == 'argparse.Namespace'
    assert converter.field(checkpoint, 'args.model') == 'flatten_pvt_tiny'
    assert converter.field(checkpoint, 'args.missing') is None
    assert checkpoint['trap'].target == f'{FAKE_PACKAGE}.config.touch'
    assert checkpoint['trap'].args == (str(tmp_path / 'trap_ran'), )
    assert checkpoint['shell'].target in ('posix.system', 'nt.system')
    assert converter.stand_ins(checkpoint) == sorted([
        'argparse.Namespace', f'{FAKE_PACKAGE}.config.CfgNode',
        f'{FAKE_PACKAGE}.config.touch', checkpoint['shell'].target
    ])
    assert converter.file_says(checkpoint) == {
        'args.model': 'flatten_pvt_tiny',
        'config.MODEL.NAME': 'flatten_pvt_tiny'
    }
    assert_nothing_ran(tmp_path)


def test_select_weights_and_save(tmp_path):
    raw = {'module.a': torch.zeros(1)}
    ema = {'module.a': torch.ones(1)}
    weights, source = converter.select_weights(
        {'state_dict': raw, 'state_dict_ema': ema},
        ('state_dict_ema', 'state_dict'))
    assert (source, converter.weights_kind(source)) == ('state_dict_ema',
                                                        'EMA')
    assert list(weights) == ['a'] and weights['a'].item() == 1
    weights, source = converter.select_weights({'a': torch.zeros(1)},
                                               ('model', ))
    assert (source, converter.weights_kind(source)) == ('<plain state dict>',
                                                        'raw')
    with pytest.raises(KeyError, match="--weights ema: no weights found: "
                       r"expected one of the keys \['state_dict_ema'\]; got"):
        converter.select_weights({'model': raw}, ('state_dict_ema', ),
                                 plain=False, context='--weights ema: ')

    dst = tmp_path / 'out' / 'converted.pth'
    converter.save_converted(str(dst), {'a': torch.ones(2)},
                             dict(arch=dict(depths=[1, 2]), note=None))
    saved = torch.load(dst, weights_only=True)
    assert saved['meta'] == dict(arch=dict(depths=[1, 2]), note=None)
    with pytest.raises(TypeError, match=r"meta\['arch'\] is a ndarray"):
        converter.save_converted(str(dst), {}, dict(arch=np.zeros(2)))


# ---------------------------------------------------- every official layout
FLATTEN_CASES = {
    'pvt': (FLattenPVT, 'tiny', 512, flatten_pvt_to_official, 'model'),
    'pvtv2': (FLattenPVTv2, 'b0', 256, flatten_pvt_to_official, 'model'),
    'swin': (FLattenSwin, 'tiny', 768, flatten_swin_to_official, 'model'),
    'cswin': (FLattenCSWin, 'tiny', 512, flatten_cswin_to_official,
              'state_dict_ema'),
}


@pytest.mark.parametrize('family', sorted(FLATTEN_CASES))
def test_flatten_official_files(family, tmp_path, capsys):
    """FLatten's main.py saves {'model', 'optimizer', 'config': CfgNode,
    ...}; main_ema.py the EMA copy."""
    model_cls, arch, head_dims, to_official, key = FLATTEN_CASES[family]
    model = converter.build_on_meta(model_cls, arch=arch)
    ours = random_state(model, head_dims)
    src, dst = tmp_path / f'flatten_{family}.pth', tmp_path / 'out.pth'
    official = {f'module.{k}': v for k, v in to_official(ours).items()}
    save_with_foreign_objects(
        src, tmp_path, lambda fake: {
            key: official,
            **trainer_extras(fake, tmp_path, f'flatten_{family}_{arch}')
        })
    load_tool('flatten2mmlinattn').main([str(src), str(dst)])
    assert_nothing_ran(tmp_path)
    saved = torch.load(dst, weights_only=True)
    meta = saved['meta']
    assert (meta['family'], meta['arch'], meta['source_key']) == (family,
                                                                 arch, key)
    assert meta['weights'] == ('ema' if key == 'state_dict_ema' else 'model')
    assert meta['mmlinattn'] == dict(
        family='FLatten', backbone=model_cls.__name__, arch=arch)
    assert saved['state_dict'].keys() == ours.keys()
    for k in ours:
        assert torch.equal(saved['state_dict'][k], ours[k]), k
    out = capsys.readouterr().out
    assert f"'config.MODEL.NAME': 'flatten_{family}_{arch}'" in out
    assert f'{FAKE_PACKAGE}.config.CfgNode' in out
    assert f'{meta["params"] / 1e6:.2f}M parameters' in out


def test_litv2_official_classification_file(tmp_path, capsys):
    model = converter.build_on_meta(LITv2, arch='small')
    ours = random_state(model, 768)
    src, dst = tmp_path / 'litv2_s.pth', tmp_path / 'out.pth'
    save_with_foreign_objects(
        src, tmp_path, lambda fake: dict(
            model=litv2_to_official(ours),
            **trainer_extras(fake, tmp_path, 'litv2_small')))
    load_tool('litv22mmlinattn').main([str(src), str(dst)])
    assert_nothing_ran(tmp_path)
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['mmlinattn'] == dict(
        family='LITv2', arch='small', alpha=0.9)
    assert (saved['meta']['weights'], saved['meta']['source_key']) == ('raw',
                                                                       'model')
    assert saved['state_dict'].keys() == ours.keys()
    for k in ours:
        assert torch.equal(saved['state_dict'][k], ours[k]), k
    assert f'{FAKE_PACKAGE}.config.CfgNode' in capsys.readouterr().out


def test_litv2_official_detection_file(tmp_path):
    """mmdet 2.x / mmseg 0.x files: {'meta': {...}, 'state_dict', ...} with
    the official module names under ``backbone.``."""
    classifier = litv2_to_official(
        random_state(converter.build_on_meta(LITv2, arch='small'), 768))
    official = {
        f'backbone.{k}': v
        for k, v in classifier.items() if not k.startswith(('head.', 'norm.'))
    }
    for i, dims in enumerate((96, 192, 384, 768)):
        official[f'backbone.norm{i}.weight'] = torch.rand(dims)
        official[f'backbone.norm{i}.bias'] = torch.rand(dims)
    official['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 96, 1, 1)
    src, dst = tmp_path / 'litv2_s_fpn_ade20k.pth', tmp_path / 'out.pth'
    save_with_foreign_objects(
        src, tmp_path, lambda fake: dict(
            meta=dict(
                config='model = dict(...)',
                CLASSES=('wall', 'building'),
                hook_msgs=dict(best_score=np.float32(0.5)),
                env=fake.CfgNode(CUDA='11.1')),
            state_dict=official,
            **trainer_extras(fake, tmp_path, 'litv2_small')))
    load_tool('litv22mmlinattn').main([str(src), str(dst)])
    assert_nothing_ran(tmp_path)
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['layout'] == 'full model (load_from)'
    assert saved['meta']['with_stage0_norm'] is True
    assert saved['meta']['source_key'] == 'state_dict'
    expected = convert_litv2_official(official)
    assert saved['state_dict'].keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(saved['state_dict'][k], v), k


# ------------------------------------------------------ SOFT vs SOFT-Norm
def soft_official() -> Dict[str, torch.Tensor]:
    """Official-layout SOFT-Tiny weights (Norm and non-Norm share them)."""
    model = converter.build_on_meta(SOFT, arch='tiny', out_type='cls_token')
    state = random_state(model)
    state['head.fc.weight'] = torch.zeros(1000, 512)
    state['head.fc.bias'] = torch.zeros(1000)
    return convert_soft_to_official(state)


@pytest.fixture(scope='module')
def soft_file(tmp_path_factory) -> Path:
    """A timm-0.3.2 CheckpointSaver file of SOFT-Tiny-Norm: 'args'
    (Namespace) name the model, EMA and raw weights, numpy metric, an amp
    scaler of a module that is not installed."""
    tmp_path = tmp_path_factory.mktemp('soft')
    official = soft_official()
    ema = {f'module.{k}': v for k, v in official.items()}
    raw = {k: torch.zeros_like(v) for k, v in official.items()}
    src = tmp_path / 'SOFT_Tiny_norm.pth'
    save_with_foreign_objects(
        src, tmp_path, lambda fake: dict(
            epoch=299,
            state_dict=raw,
            optimizer=dict(state={}, param_groups=[]),
            version=2,
            args=argparse.Namespace(model='soft_norm_tiny', lr=1e-3),
            amp_scaler=fake.CfgNode(scale=65536.),
            trap=fake.Trap(str(tmp_path / 'trap_ran')),
            state_dict_ema=ema,
            metric=np.float64(79.4)))
    return src


def test_soft_timm_file_norm_from_args(soft_file, tmp_path, capsys):
    dst = tmp_path / 'soft_tiny_norm.pth'
    load_tool('soft2mmlinattn').main([str(soft_file), str(dst)])
    assert_nothing_ran(soft_file.parent)
    out = capsys.readouterr().out
    assert "the file says {'args.model': 'soft_norm_tiny'}" in out
    assert ('SOFT-Norm (sym_norm=True, from args.model=\'soft_norm_tiny\' in '
            "the file), EMA weights 'state_dict_ema': 187 tensors, 13.07M "
            'parameters') in out
    assert "'depths': [1, 2, 3, 2]} (= arch='tiny')" in out
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['mmlinattn'] == dict(
        family='SOFT',
        sym_norm=True,
        arch='tiny',
        stated_by="args.model='soft_norm_tiny' in the file")
    assert saved['meta']['weights'] == 'EMA'
    expected = convert_soft_official(soft_official())  # EMA, not raw zeros
    assert saved['state_dict'].keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(saved['state_dict'][k], v), k


@pytest.mark.parametrize('argv, match', [
    (['--no-norm'], "args.model='soft_norm_tiny' in the file says SOFT-Norm "
     r'\(sym_norm=True\) but --no-norm says SOFT \(sym_norm=False\)'),
    (['--config', 'configs/classification/soft_tiny_8xb128_in1k.py'],
     "args.model='soft_norm_tiny' in the file says SOFT-Norm .* but "
     r'--config configs/classification/soft_tiny_8xb128_in1k.py \(model'
     r'.backbone.sym_norm\) says SOFT \(sym_norm=False\)'),
    (['--arch', 'small'], r"--arch small says arch 'small' \(.*'depths': "
     r"\[1, 3, 7, 4\]\}\) but the keys of the file give .*'depths': "
     r'\[1, 2, 3, 2\]'),
])
def test_soft_disagreement_names_both(soft_file, tmp_path, argv, match):
    if '--config' in argv:
        pytest.importorskip('mmpretrain')
    with pytest.raises(ValueError, match=match):
        load_tool('soft2mmlinattn').main(
            [str(soft_file), str(tmp_path / 'x.pth')] + argv)
    assert not (tmp_path / 'x.pth').exists()


def test_soft_agreeing_statements_pass(soft_file, tmp_path):
    pytest.importorskip('mmpretrain')
    dst = tmp_path / 'x.pth'
    load_tool('soft2mmlinattn').main([
        str(soft_file),
        str(dst), '--norm', '--arch', 'tiny', '--config',
        'configs/classification/soft_tiny_norm_8xb128_in1k.py'
    ])
    assert torch.load(dst, weights_only=True)['meta']['mmlinattn'][
        'sym_norm'] is True


def test_soft_silent_file_needs_the_user(tmp_path, capsys):
    src = tmp_path / 'soft_weights_only.pth'
    torch.save({'state_dict_ema': soft_official()}, src)
    tool = load_tool('soft2mmlinattn')
    with pytest.raises(ValueError, match='pass --norm .SOFT-Norm. or '
                       '--no-norm .SOFT.'):
        tool.main([str(src), str(tmp_path / 'x.pth')])
    dst = tmp_path / 'soft_tiny_det.pth'
    tool.main([str(src), str(dst), '--no-norm', '--to', 'det'])
    assert 'SOFT (sym_norm=False, from --no-norm)' in capsys.readouterr().out
    meta = torch.load(dst, weights_only=True)['meta']['mmlinattn']
    assert (meta['sym_norm'], meta['stated_by']) == (False, '--no-norm')


def test_backbone_warns_when_sym_norm_disagrees_with_the_file(
        soft_file, tmp_path):
    dst = tmp_path / 'soft_tiny_norm_det.pth'
    load_tool('soft2mmlinattn').main([str(soft_file), str(dst), '--to', 'det'])

    def build(sym_norm: bool) -> SOFT:
        return SOFT(
            'tiny',
            sym_norm=sym_norm,
            with_cls_token=False,
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(
                type='Pretrained', checkpoint=str(dst), prefix='backbone.'))

    with pytest.warns(UserWarning) as record:
        build(False).init_weights()
    messages = [str(w.message) for w in record if 'meta says' in str(
        w.message)]
    assert messages == [
        f'SOFT(sym_norm=False) is initialised from {dst}, whose meta says '
        "the weights are for sym_norm=True (stated by args.model="
        "'soft_norm_tiny' in the file): the outputs will be wrong. Fix: set "
        'sym_norm=True in the backbone config (e.g. --cfg-options '
        'model.backbone.sym_norm=True).'
    ]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        build(True).init_weights()
    assert not [w for w in record if 'meta says' in str(w.message)]
    assert osp.isfile(dst)
