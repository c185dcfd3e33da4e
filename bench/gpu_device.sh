#!/usr/bin/env bash
# Run ON THE DEVICE machine (the `run` tool, carry [".whl"] fetched by bench/gpu_wheels.sh), from the repo root:
# installs the carried wheels beside the image's torch and runs bench/gpu_check.py once, at most LIMIT seconds,
# writing its JSON and log to $OUT (or ./gpu_check_out when OUT is unset).
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_device: installing the carried wheels failed" >&2; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.csv"
timeout "${LIMIT:-480}" python3 bench/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
