#!/usr/bin/env bash
# One-command GPU check for a bare CUDA machine without network (see benchmarks/gpu_check.py):
#   benchmarks/gpu_check.sh --out DIR                # on the GPU, <= 8 minutes
#   benchmarks/gpu_check.sh --cpu-dry-run --out DIR  # tiny sizes on CPU, the same steps
# Installs dtrain from this working tree without fetching anything; falls back to PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import dtrain' 2>/dev/null; then
    "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -q -e . 2>/dev/null \
        || echo "[gpu-check] pip could not install dtrain offline: using PYTHONPATH=$PWD:$PWD/data_prep"
fi
export PYTHONPATH="$PWD:$PWD/data_prep${PYTHONPATH:+:$PYTHONPATH}"  # dtrain_prep lives in data_prep/
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
