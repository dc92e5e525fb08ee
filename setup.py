# Copyright (c) mmlinattn contributors. All rights reserved.
"""Build and install mmlinattn.

The compiled ops in ``ops/csrc`` (mmcv layout) become one extension,
``mmlinattn._ext``. Install with ``pip install --no-build-isolation .`` so the
build sees the installed torch (under build isolation torch is absent and the
package installs without ``_ext``; the pure-PyTorch reference path is used).

Environment variables:
    MMLINATTN_WITH_OPS=0   skip the extension entirely.
    FORCE_CUDA=1           compile the CUDA kernels without a visible GPU
                           (needs nvcc matching torch's CUDA major version).
    TORCH_CUDA_ARCH_LIST   CUDA archs (default with FORCE_CUDA: 8.0;9.0+PTX).
    MMLINATTN_REQUIRE_EXT=1  a failed extension build fails the install
                           (otherwise it only warns).
    MAX_JOBS               parallel compile jobs.
"""
import glob
import os
import os.path as osp
import platform
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'mmlinattn', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``requirements/<fname>`` (comments dropped)."""
    reqs = []
    with open(osp.join(ROOT, 'requirements', fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def add_mim_extension() -> None:
    """Put ``tools``, ``configs`` and ``model-index.yml`` into
    ``mmlinattn/.mim``: symlinks for editable installs (``develop`` and PEP
    660 ``editable_wheel``), copies for sdists and wheels, so that ``mim``
    and ``mmlinattn::`` config bases find them."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink' if platform.system() != 'Windows' else 'copy'
    elif any(cmd in sys.argv
             for cmd in ('sdist', 'bdist_wheel', 'build', 'install')):
        mode = 'copy'
    else:
        return
    mim_root = osp.join(ROOT, 'mmlinattn', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for name in ('model-index.yml', 'configs', 'tools'):
        src = osp.join(ROOT, name)
        dst = osp.join(mim_root, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_root), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


def set_cuda_home() -> None:
    """torch takes CUDA_HOME to be the parent of the ``nvcc`` on PATH; for a
    wrapper script such as ``/usr/local/bin/nvcc`` that is ``/usr/local``,
    which has neither the CUDA headers nor ``libcudart`` (the link fails).
    Point CUDA_HOME at the real toolkit when it is unset. Must run before
    ``torch.utils.cpp_extension`` is imported."""
    if os.getenv('CUDA_HOME') or os.getenv('CUDA_PATH'):
        return
    nvcc = shutil.which('nvcc')
    if nvcc is None:
        return
    for home in (osp.dirname(osp.dirname(osp.realpath(nvcc))),
                 '/usr/local/cuda'):
        if osp.exists(osp.join(home, 'include', 'cuda_runtime_api.h')):
            os.environ['CUDA_HOME'] = home
            return


def get_extensions() -> list:
    if os.getenv('MMLINATTN_WITH_OPS', '1') == '0':
        return []
    set_cuda_home()
    try:
        import torch
        from torch.utils.cpp_extension import (CUDA_HOME, CppExtension,
                                               CUDAExtension)
    except ImportError:
        print('mmlinattn: torch not importable at build time (build '
              'isolation?); installing without mmlinattn._ext. Use '
              '"pip install --no-build-isolation ." to compile the ops.')
        return []
    csrc = osp.join('ops', 'csrc')
    sources = sorted(
        glob.glob(osp.join(csrc, 'pytorch', '*.cpp')) +
        glob.glob(osp.join(csrc, 'pytorch', 'cpu', '*.cpp')))
    if not sources:
        return []
    include_dirs = [osp.abspath(osp.join(csrc, 'common'))]
    define_macros = []
    extra_compile_args = {'cxx': ['-O3']}
    if torch.backends.openmp.is_available() and sys.platform == 'linux':
        # at::parallel_for is inline header code: without OpenMP here it
        # runs serially. Compiled, not linked, with -fopenmp: the GOMP calls
        # resolve to the OpenMP runtime libtorch_cpu links (one runtime,
        # one thread count), never to a second copy.
        extra_compile_args['cxx'].append('-fopenmp')
    with_cuda = (torch.cuda.is_available() and CUDA_HOME is not None) or \
        os.getenv('FORCE_CUDA', '0') == '1'
    if with_cuda:
        if CUDA_HOME is None:
            raise RuntimeError('FORCE_CUDA=1 but no CUDA toolkit was found; '
                               'set CUDA_HOME or unset FORCE_CUDA')
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0+PTX')
        sources += sorted(
            glob.glob(osp.join(csrc, 'pytorch', 'cuda', '*.cu')) +
            glob.glob(osp.join(csrc, 'pytorch', 'cuda', '*.cpp')))
        define_macros.append(('MMLINATTN_WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3', '--use_fast_math']
        include_dirs.append(osp.abspath(osp.join(csrc, 'common', 'cuda')))
        ext_cls = CUDAExtension
    else:
        print('mmlinattn: compiling mmlinattn._ext with CPU kernels only '
              '(no GPU visible; FORCE_CUDA=1 adds the CUDA kernels)')
        ext_cls = CppExtension
    return [
        ext_cls(
            name='mmlinattn._ext',
            sources=sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args)
    ]


def get_cmdclass() -> dict:
    try:
        from torch.utils.cpp_extension import BuildExtension
    except ImportError:
        return {}

    class OptionalBuildExtension(BuildExtension):
        """A failed compile warns (pure-PyTorch ops are used instead) unless
        MMLINATTN_REQUIRE_EXT=1."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # compiler missing or failing
                if os.getenv('MMLINATTN_REQUIRE_EXT', '0') == '1':
                    raise
                warnings.warn(f'mmlinattn: building {ext.name} failed '
                              f'({exc}); mmlinattn will use its pure-PyTorch '
                              'ops. Set MMLINATTN_REQUIRE_EXT=1 to see the '
                              'failure as an error.')

    os.environ.setdefault('MAX_JOBS', str(max(1, (os.cpu_count() or 2))))
    return {'build_ext': OptionalBuildExtension.with_options(use_ninja=True)}


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmlinattn',
        version=get_version(),
        description='Linear-attention and softmax-free vision transformers '
        '(SOFT, FLatten, LITv2, UFO-ViT) for OpenMMLab',
        long_description=open(osp.join(ROOT, 'README.md')).read(),
        long_description_content_type='text/markdown',
        keywords='computer vision, linear attention, transformer, openmmlab',
        license='Apache License 2.0',
        python_requires='>=3.8',
        packages=find_packages(exclude=('configs', 'tools', 'tests', 'ops',
                                        'docs')),
        include_package_data=True,
        classifiers=[
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        install_requires=parse_requirements('runtime.txt'),
        extras_require={
            'mim': parse_requirements('mminstall.txt'),
            'cls': parse_requirements('cls.txt'),
            'det': parse_requirements('det.txt'),
            'seg': parse_requirements('seg.txt'),
            'tests': parse_requirements('tests.txt'),
            'all': parse_requirements('mminstall.txt') +
            parse_requirements('cls.txt') + parse_requirements('det.txt') +
            parse_requirements('seg.txt'),
        },
        ext_modules=get_extensions(),
        cmdclass=get_cmdclass(),
        zip_safe=False)
