# Copyright (c) mmlinattn contributors. All rights reserved.
"""``tools/analysis_tools/gpu_check.py --device cpu --quick``: the dry run
of the one-shot GPU check, so that the script works the first time a GPU is
there."""
import os.path as osp
import subprocess
import sys

SCRIPT = osp.join('tools', 'analysis_tools', 'gpu_check.py')
SECTIONS = ('## Extension', '## CUDA op tests',
            '## SOFT attention: fused vs reference',
            '## Backbones: forward + backward, fp32 and autocast',
            '## Backbones: throughput and peak memory',
            '## Gaussian ops: fused vs reference', '## Dependencies',
            '## Result')
FAMILIES = ('SOFT', 'FLattenPVT', 'FLattenPVTv2', 'FLattenSwin',
            'FLattenCSWin', 'LITv2', 'UFOViT')


def test_gpu_check_dry_run(tmp_path, repo_root, subprocess_env):
    out = tmp_path / 'report.md'
    result = subprocess.run(
        [sys.executable, SCRIPT, '--device', 'cpu', '--quick', '--out',
         str(out)],
        cwd=repo_root, env=subprocess_env, capture_output=True, text=True,
        timeout=300)
    report = out.read_text()
    # PASS needs mmlinattn._ext (its CPU kernels here), as on the GPU.
    assert result.returncode == 0 and '**PASS**' in report, \
        report[-3000:] + result.stderr[-3000:]
    positions = [report.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    backbones = report[report.index(SECTIONS[3]):report.index(SECTIONS[4])]
    for family in FAMILIES:
        rows = [r for r in backbones.splitlines()
                if r.startswith(f'| {family} |')]
        # fp32, fp16, bf16 at the classification and the dense size.
        assert len(rows) == 6, (family, rows)
        assert all(r.endswith('| ok |') for r in rows), rows
    timed = report[report.index(SECTIONS[4]):report.index(SECTIONS[5])]
    assert timed.count('| UFOViT |') == 8  # 2 sizes x 2 precisions x 2 modes
    assert 'relative L2 error' in report[report.index(SECTIONS[5]):]
    # The GPU machine has torch and mmengine only.
    assert '- imported by this run: none of mmcv, mmdet' in report
