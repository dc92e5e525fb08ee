#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with the pinned
# OpenMMLab stack and install mmlinattn with its compiled extension.
#
#   tools/setup_env.sh            # -> .venv in the repository root
#   MMLINATTN_VENV=/path tools/setup_env.sh
#
# Idempotent: a second run only checks the stamp and re-verifies (seconds).
# mmcv 2.1.0 has no wheel for torch 2.13, so it is built from source once and
# kept in a wheel cache keyed by the exact torch build it was compiled against
# (pip's own wheel cache is keyed by the sdist only and would silently hand a
# wheel built for another torch to a new environment).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMLINATTN_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
CACHE_ROOT="${MMLINATTN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmlinattn}"
MMCV_VERSION=2.1.0
PINS="$REPO_ROOT/requirements/ci.txt"
BUILD_PINS="$REPO_ROOT/requirements/build.txt"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

log() { printf '[setup_env] %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null; then
    log "error: $PYTHON not found; set PYTHON=/path/to/python3.11"; exit 1
fi
"$PYTHON" - <<'EOF' || { log "error: Python 3.11 is required (set PYTHON=...)"; exit 1; }
import sys; sys.exit(sys.version_info[:2] != (3, 11))
EOF

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# Everything the stack depends on, hashed: any change re-runs the install.
STACK_HASH="$(cat "$PINS" "$BUILD_PINS" "$0" | sha256sum | cut -c1-16)"
STAMP="$VENV/.mmlinattn-stack"

verify_mmcv() {
    "$PY" - <<'EOF'
import torch, mmcv
from mmcv.utils import ext_loader
ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
import mmcv.ops  # noqa: F401
assert mmcv.__version__ == '2.1.0', mmcv.__version__
EOF
}

if [ "$(cat "$STAMP" 2>/dev/null)" != "$STACK_HASH" ]; then
    log "installing the pinned stack (requirements/ci.txt)"
    "${PIP[@]}" install -q -r "$BUILD_PINS"
    "${PIP[@]}" install -q torch==2.13.0,!=2.13.0+cpu torchvision==0.28.0 -c "$PINS"
    TORCH_TAG="$("$PY" -c 'import torch,sys; print(f"torch{torch.__version__}-cu{torch.version.cuda}-cp{sys.version_info[0]}{sys.version_info[1]}")')"
    case "$TORCH_TAG" in *+cpu*|*cuNone*) log "error: got a CPU-only torch ($TORCH_TAG)"; exit 1;; esac

    # mmcv's own runtime dependencies: its wheel is installed with --no-deps
    # below (so pip never swaps torch or fetches the sdist), and verify_mmcv
    # must fail only for a real ABI mismatch, never for a missing cv2.
    "${PIP[@]}" install -q addict numpy packaging Pillow pyyaml yapf opencv-python mmengine \
        -c "$PINS"

    # mmcv: reuse only a wheel built against exactly this torch build.
    WHEEL_DIR="$CACHE_ROOT/wheels/mmcv-$MMCV_VERSION-$TORCH_TAG"
    if ! "$PY" -c "import mmcv; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null \
        || ! verify_mmcv 2>/dev/null; then
        WHEEL="$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -1 || true)"
        if [ -n "$WHEEL" ]; then
            log "installing cached mmcv wheel for $TORCH_TAG"
            "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL"
            if ! verify_mmcv; then
                log "cached mmcv wheel does not load against $TORCH_TAG; rebuilding"
                rm -rf "$WHEEL_DIR"; WHEEL=""
            fi
        fi
        if [ -z "$WHEEL" ]; then
            log "building mmcv $MMCV_VERSION from source against $TORCH_TAG (~20 min on 2 cores)"
            mkdir -p "$WHEEL_DIR"
            TMP_WHEELS="$(mktemp -d)"
            MMCV_WITH_OPS=1 "${PIP[@]}" wheel -q --no-cache-dir --no-deps --no-build-isolation \
                -w "$TMP_WHEELS" "mmcv==$MMCV_VERSION"
            mv "$TMP_WHEELS"/mmcv-*.whl "$WHEEL_DIR"/ && rmdir "$TMP_WHEELS"
            "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
            verify_mmcv || { log "error: freshly built mmcv does not load"; rm -rf "$WHEEL_DIR"; exit 1; }
        fi
    fi
    # The rest of the stack; the constraint file keeps torch/mmcv where they are.
    "${PIP[@]}" install -q -r "$PINS" "mmcv==$MMCV_VERSION"
    echo "$STACK_HASH" > "$STAMP"
else
    log "pinned stack already installed ($VENV)"
fi
verify_mmcv

# mmlinattn itself (editable) with mmlinattn._ext. The CUDA kernels are
# compiled too when nvcc matches torch's CUDA major version, so CI proves they
# build even on machines without a GPU.
NVCC_MAJOR="$( (nvcc --version 2>/dev/null || true) | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
TORCH_CUDA_MAJOR="$("$PY" -c 'import torch; print((torch.version.cuda or "").split(".")[0])')"
if [ -z "${FORCE_CUDA:-}" ] && [ -n "$NVCC_MAJOR" ] && [ "$NVCC_MAJOR" = "$TORCH_CUDA_MAJOR" ]; then
    export FORCE_CUDA=1
fi
EXT_HASH="$( (cd "$REPO_ROOT" && cat setup.py mmlinattn/version.py \
    $(find ops -type f 2>/dev/null | sort); echo "$REPO_ROOT ${FORCE_CUDA:-0}") | sha256sum | cut -c1-16)"
EXT_STAMP="$VENV/.mmlinattn-ext"
if [ "$(cat "$EXT_STAMP" 2>/dev/null)" != "$EXT_HASH" ] || \
        ! "$PY" -c 'import mmlinattn, mmlinattn._ext' 2>/dev/null; then
    log "installing mmlinattn (editable) and compiling mmlinattn._ext (FORCE_CUDA=${FORCE_CUDA:-0})"
    (cd "$REPO_ROOT" && MMLINATTN_REQUIRE_EXT=1 "${PIP[@]}" install -q --no-deps \
        --no-build-isolation -e .)
    echo "$EXT_HASH" > "$EXT_STAMP"
else
    log "mmlinattn and its extension are up to date"
fi
(cd /tmp && REPO_ROOT="$REPO_ROOT" FORCE_CUDA="${FORCE_CUDA:-0}" "$PY" - <<'PYEOF'
import os
import mmlinattn
import mmlinattn.ops as ops
repo = os.environ['REPO_ROOT']
assert os.path.dirname(mmlinattn.__file__) == os.path.join(repo, 'mmlinattn'), \
    f'mmlinattn is imported from {mmlinattn.__file__}, not from {repo}'
print(f'[setup_env] mmlinattn {mmlinattn.__version__}: _ext loaded = '
      f'{ops.ext_available()}, CUDA kernels compiled = {ops.ext_has_cuda()}')
assert ops.ext_available(), 'mmlinattn._ext failed to load; see the build log'
assert ops.ext_has_cuda() == (os.environ['FORCE_CUDA'] == '1'), \
    'the CUDA kernels were requested but are missing from mmlinattn._ext'
PYEOF
)
log "ready: source $VENV/bin/activate"
