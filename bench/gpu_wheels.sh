#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a device run: fetch into .whl/ (git-ignored) the wheels that the device
# image (Python 3.12, torch 2.11 + CUDA, numpy, tqdm, pyyaml, psutil, msgpack, einops, ninja, py-cpuinfo; see
# /work/.library/device/KINDS.md) lacks for bench/gpu_check.py: DeepSpeed (an sdist on PyPI: built here into a
# pure-Python wheel, no ops) and its pydantic / hjson stack. About 5 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir .whl
ds=$("$PY" -c 'from importlib.metadata import version; print(version("deepspeed"))')  # the version tested here
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w .whl "deepspeed==$ds"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    hjson pydantic annotated_types typing_inspection 'typing_extensions>=4.16'
core=$(unzip -p .whl/pydantic-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==//p')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "pydantic_core==$core"
ls -l .whl
