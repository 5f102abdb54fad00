#!/usr/bin/env bash
# The wheels bench/gpu_check.sh needs on this workplace's GPU machine, which has PyTorch, transformers, peft,
# accelerate and torchvision but no diffusers, and reaches no package index. Run here (PyPI is reachable);
# the GPU session carries .whl/ (ignored by git) and installs it there (docs/benchmarks.md, "On a lent GPU").
# diffusers is the version this checkout's .venv tests with; importlib_metadata is its one missing need there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIFFUSERS=$("$PY" -c "import diffusers; print(diffusers.__version__)")
rm -rf .whl && mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "diffusers==$DIFFUSERS" "importlib_metadata==8.7.0"
ls -l .whl
