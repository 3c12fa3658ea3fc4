#!/usr/bin/env bash
# One GPU-machine call for the release measurements: GPU tests, the 8B-shaped checkpoint, the
# weights benchmark (bench/load.py), the serving benchmark (bench/serve.py) and fresh-process
# start-up to first token (bench/startup.py). Expects the carried build in build/dev
# (make STATIC_DEPS=1 REL=build/dev gpu-build) and the peer wheels in .whl/.
# Usage (on the GPU machine): bash bench/run_final_device.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_final_device.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DEV="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
ZS_BIN=build/dev/zerostart bash tests/gpu/run.sh > "$OUT/gpu_tests.log" 2>&1; echo "gpu tests: $(tail -1 "$OUT/gpu_tests.log")"
MODEL=${ZS_BENCH_MODEL:-/tmp/zs-m8b}
[ -f "$MODEL/config.json" ] || build/dev/zerostart synth "$MODEL" --shape llama3-8b --seed 1 >/dev/null
python3 bench/serve.py --zerostart build/dev/zerostart --model "$MODEL" --out "$OUT/serve.json" --device-name "$DEV" 2>&1 | tee "$OUT/serve.log"
python3 bench/startup.py --zerostart build/dev/zerostart --model "$MODEL" --out "$OUT/startup.json" --device-name "$DEV" 2>&1 | tee "$OUT/startup.log"
python3 bench/load.py --zerostart build/dev/zerostart --model "$MODEL" --out "$OUT/load.json" \
  --device-name "$DEV" ${ZS_BENCH_ARGS:-} > "$OUT/load.log" 2>&1; tail -14 "$OUT/load.log"
