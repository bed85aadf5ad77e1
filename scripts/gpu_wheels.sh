#!/usr/bin/env bash
# Fill .whl/ with the cp312 manylinux x86_64 wheels of what the GPU machine lacks (versions from uv.lock, one each)
# and .data/ with the data the device check reads; both are git-ignored and travel with the device tool's `carry`.
# The same wheelhouse installs the project on a GPU node without network:
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}          # needs `packaging` (the project venv has it)
PIP=${PIP_PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3}
[ -x "$PIP" ] || PIP=python3
rm -rf .whl && mkdir -p .whl .data
"$PY" scripts/gpu_wheel_list.py > .whl/requirements.txt
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_34_x86_64; do platforms+=(--platform "$p"); done
while read -r req; do
  "$PIP" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$req"
done < .whl/requirements.txt
n_req=$(wc -l < .whl/requirements.txt); n_whl=$(ls .whl/*.whl | wc -l)
[ "$n_req" -eq "$n_whl" ] || { echo "error: $n_req requirements but $n_whl wheels in .whl/" >&2; exit 1; }
cp ../shared/data/mnist_subset.npz .data/
echo "wheels: $n_whl, $(du -sm .whl | cut -f1) MiB in .whl/; data: $(du -sm .data | cut -f1) MiB in .data/; total $(du -scm .whl .data | tail -1 | cut -f1) MiB"
