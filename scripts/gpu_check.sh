#!/usr/bin/env bash
# The device check: scripts/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--skip SECTION ...]
# Installs the carried wheels (.whl/, filled by scripts/gpu_wheels.sh) into /tmp/site when the project's imports are
# missing, then runs scripts/device_check.py: the cuda tests, every throughput figure, suites/gpu-check.yaml end to
# end into an MLflow store under OUT_DIR, and OUT_DIR/figures.json + calibration.json. See docs/performance.md.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--skip SECTION ...]" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import mlflow, pydantic, torchattacks, art" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "error: the project's packages are missing and .whl/ holds no wheels (run scripts/gpu_wheels.sh)" >&2; exit 2; }
  SITE=${SITE:-/tmp/site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
if [ ! -f .data/mnist_subset.npz ] && [ -f ../shared/data/mnist_subset.npz ]; then
  mkdir -p .data && cp ../shared/data/mnist_subset.npz .data/
fi
exec "$PY" scripts/device_check.py "$@"
