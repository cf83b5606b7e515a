#!/usr/bin/env bash
# The prepared check for a lent GPU (see scripts/gpu_check.py and docs/performance.md).
#   On the GPU machine:  scripts/gpu_check.sh --pack "$OUT/gpu.tar.gz"
#   Here, on the CPU:    scripts/gpu_check.sh --preset tiny --results /tmp/gpu-tiny
# Wheels that the GPU image lacks (our pinned transformers and its needs, bitsandbytes for QLoRA) travel
# in .whl/ (scripts/fetch_gpu_wheels.sh downloads them) and are installed into /tmp/site, never from a network.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python      # a machine set up by make: everything is installed
else
  PYTHON=python3               # the GPU image: its PyTorch plus the carried wheels (built for its Python 3.12)
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
exec "$PYTHON" scripts/gpu_check.py "$@"
