# Copyright (c) mmlinattn contributors. All rights reserved.
"""Build checks of the op sources: the CUDA kernels compile with nvcc even
where no GPU runs them, and the extension exports what the wrappers use."""
import glob
import importlib
import os.path as osp
import shutil
import subprocess
import sysconfig

import pytest
import torch
from torch.utils import cpp_extension

import mmlinattn.ops as ops
from mmlinattn.ops import ext_available

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CSRC = osp.join(REPO, 'ops', 'csrc')


def _nvcc() -> str:
    home = cpp_extension.CUDA_HOME
    nvcc = osp.join(home, 'bin', 'nvcc') if home else shutil.which('nvcc')
    if not nvcc or not osp.exists(nvcc):
        pytest.skip('nvcc not found (set CUDA_HOME): the CUDA sources cannot '
                    'be compile-checked')
    if torch.version.cuda is None:
        pytest.skip('torch is a CPU-only build: no CUDA headers to compile '
                    'the kernels against')
    return nvcc


def _includes() -> list:
    dirs = cpp_extension.include_paths(device_type='cuda') + [
        osp.join(CSRC, 'common'),
        osp.join(CSRC, 'common', 'cuda'),
        sysconfig.get_paths()['include'],
    ]
    return [f'-I{d}' for d in dirs]


def test_cuda_sources_compile(tmp_path):
    """Compile every CUDA translation unit as setup.py does with
    FORCE_CUDA=1 (one architecture, sm_80, to keep it short) and check
    that the launchers and kernels end up in the objects."""
    nvcc = _nvcc()
    sources = sorted(glob.glob(osp.join(CSRC, 'pytorch', 'cuda', '*.cu')))
    assert sources, 'no CUDA sources under ops/csrc/pytorch/cuda'
    for src in sources:
        obj = tmp_path / (osp.basename(src) + '.o')
        cmd = [
            nvcc, '-c', src, '-o',
            str(obj), '-std=c++20', '-Xcompiler', '-fPIC',
            *cpp_extension.COMMON_NVCC_FLAGS, '-O3', '--use_fast_math',
            '-DMMLINATTN_WITH_CUDA', '-DTORCH_API_INCLUDE_EXTENSION_H',
            '-DTORCH_EXTENSION_NAME=_ext',
            '-gencode=arch=compute_80,code=sm_80', *_includes()
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]
        symbols = subprocess.run(['nm', '-C', str(obj)],
                                 capture_output=True,
                                 text=True).stdout
        for name in ('gaussian_sqdist_forward_cuda',
                     'gaussian_kernel_matmul_forward_cuda',
                     'gaussian_kernel_matmul_backward_cuda',
                     'gaussian_kernel_matmul_cuda_kernel',
                     'gaussian_sqdist_cuda_kernel'):
            assert name in symbols, f'{name} missing from {obj}'


def test_cuda_binding_compiles(tmp_path):
    """cudabind.cpp (host code, compiled by the C++ compiler)."""
    _nvcc()
    cxx = shutil.which('c++') or shutil.which('g++')
    if cxx is None:
        pytest.skip('no C++ compiler found')
    for src in glob.glob(osp.join(CSRC, 'pytorch', 'cuda', '*.cpp')):
        cmd = [
            cxx, '-fsyntax-only', '-std=c++20', '-DMMLINATTN_WITH_CUDA',
            '-DTORCH_API_INCLUDE_EXTENSION_H', '-DTORCH_EXTENSION_NAME=_ext',
            src, *_includes()
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.skipif(
    not ext_available(),
    reason='mmlinattn._ext is not built: "pip install --no-build-isolation '
    '-e ." or "python setup.py build_ext --inplace"')
def test_extension_exports_the_ops():
    gk_module = importlib.import_module('mmlinattn.ops.gaussian_kernel')
    ext = gk_module.ext_module
    for name in ('has_cuda', 'gaussian_sqdist_forward',
                 'gaussian_sqdist_backward', 'gaussian_kernel_matmul_forward',
                 'gaussian_kernel_matmul_backward', 'focusing_forward',
                 'focusing_backward', 'depthwise_conv2d_weight_grad'):
        assert hasattr(ext, name), name
    assert ops.ext_has_cuda() == bool(ext.has_cuda())
    assert gk_module._EXT_HAS_OPS


@pytest.mark.skipif(
    not ext_available() or not torch.backends.openmp.is_available()
    or not osp.exists('/proc/self/maps'),
    reason='needs the built extension, a torch with OpenMP and Linux')
def test_extension_uses_the_openmp_runtime_torch_loaded():
    """at::parallel_for is inline header code: compiled without OpenMP the
    CPU kernels run on one thread. The extension must call OpenMP and get
    it from the runtime torch loaded (one runtime, one thread count)."""
    ext = importlib.import_module('mmlinattn.ops.ext_loader').ext_module
    undefined = subprocess.run(['nm', '-D', '--undefined-only', ext.__file__],
                               capture_output=True,
                               text=True).stdout
    assert 'GOMP_parallel' in undefined, \
        'mmlinattn._ext was compiled without -fopenmp'
    with open('/proc/self/maps') as f:
        runtimes = {
            line.split()[-1]
            for line in f if 'libgomp' in line or 'libiomp' in line
        }
    assert len(runtimes) == 1, runtimes
