#!/usr/bin/env bash
# One GPU-machine call for the release measurements, most needed first, each stage under a
# time limit so that one slow stage cannot cost the others: GPU tests, the 8B-shaped
# checkpoint, the serving benchmark (bench/serve.py), start-up to first token (bench/e2e.py:
# pool, fresh server warm/cold, transformers fresh process warm/cold), then the weights
# benchmark (bench/load.py). Expects the carried build in build/dev
# (make STATIC_DEPS=1 REL=build/dev gpu-build) and the peer wheels in .whl/.
# Usage (on the GPU machine): bash bench/run_final_device.sh OUTDIR [TOTAL_SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_final_device.sh OUTDIR [TOTAL_SECONDS]}
TOTAL=${2:-560}
START=$SECONDS
left() { echo $((TOTAL - (SECONDS - START))); }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DEV="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
ZS=build/dev/zerostart
timeout 60 env ZS_BIN=$ZS bash tests/gpu/run.sh > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests: $(grep -E 'passed|not ok' "$OUT/gpu_tests.log" | tail -3 | tr '\n' ' ')"
MODEL=${ZS_BENCH_MODEL:-/tmp/zs-m8b}
[ -f "$MODEL/config.json" ] || timeout 120 $ZS synth "$MODEL" --shape llama3-8b --seed 1 >/dev/null
echo "== serve ($(left) s left)"
timeout 90 python3 bench/serve.py --zerostart $ZS --model "$MODEL" --out "$OUT/serve.json" --device-name "$DEV" 2>&1 | tail -4
echo "== e2e ($(left) s left)"
timeout 150 python3 bench/e2e.py --zerostart $ZS --model "$MODEL" --out "$OUT/e2e.json" --png "$OUT/e2e.png" \
  --device-name "$DEV" 2>&1 | tail -8
echo "== load ($(left) s left)"
L=$(( $(left) - 10 ))
if [ "$L" -gt 120 ]; then
  timeout "$L" python3 bench/load.py --zerostart $ZS --model "$MODEL" --out "$OUT/load.json" --device-name "$DEV" \
    ${ZS_BENCH_ARGS:-} > "$OUT/load.log" 2>&1
  tail -14 "$OUT/load.log"
else
  echo "load: not run, $L s left"
fi
echo "total $((SECONDS - START)) s"
