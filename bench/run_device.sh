#!/usr/bin/env bash
# Everything one device-machine call does for the weights benchmark: GPU tests, then the
# 8B-shaped synthetic checkpoint and bench/load.py. Expects the carried build in build/dev
# (make STATIC_DEPS=1 REL=build/dev gpu-build) and the peer wheels in .whl/.
# Usage (on the GPU machine): bash bench/run_device.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_device.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
DEV="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
ZS_BIN=build/dev/zerostart bash tests/gpu/run.sh 2>&1 | tee "$OUT/gpu_tests.log"
MODEL=${ZS_BENCH_MODEL:-/tmp/zs-m8b}
[ -f "$MODEL/config.json" ] || build/dev/zerostart synth "$MODEL" --shape llama3-8b --seed 1
python3 bench/load.py --zerostart build/dev/zerostart --model "$MODEL" --out "$OUT/load.json" \
  --device-name "$DEV" ${ZS_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
