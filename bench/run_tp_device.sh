#!/usr/bin/env bash
# One call on a machine with several GPUs for tensor parallel (issue 7): the GPU tests (which
# add the tensor-parallel checks when there are 2 or more GPUs: sliced load verified byte for
# byte, NCCL engine against the one-GPU engine), then bench/tp.py for the cases this machine's
# GPUs fit, each stage under a time limit. Expects the carried build in build/dev
# (make STATIC_DEPS=1 REL=build/dev gpu-build).
# Usage (on the GPU machine): bash bench/run_tp_device.sh OUTDIR [TOTAL_SECONDS] [CASES]
#   CASES: SHAPE:GPUS,... (default llama3-70b-40l:2 on 2-3 GPUs, llama3-70b:4 on 4 or more)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_tp_device.sh OUTDIR [TOTAL_SECONDS] [CASES]}
TOTAL=${2:-560}
START=$SECONDS
left() { echo $((TOTAL - (SECONDS - START))); }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
NGPU=$(nvidia-smi -L | grep -c '^GPU')
DEV="${NGPU}x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM"
CASES=${3:-$([ "$NGPU" -ge 4 ] && echo llama3-70b:4 || echo llama3-70b-40l:2)}
ZS=build/dev/zerostart
echo "== $DEV; cases $CASES"
timeout 150 env ZS_BIN=$ZS bash tests/gpu/run.sh > "$OUT/gpu_tests.log" 2>&1
grep -E '^(ok|not ok|skip)|passed' "$OUT/gpu_tests.log" | grep -E 'tp|passed|not ok'
M8=/tmp/zs-m8b
[ -f "$M8/config.json" ] || timeout 120 $ZS synth "$M8" --shape llama3-8b --seed 1 >/dev/null
echo "== bench/tp.py ($(left) s left)"
timeout $(( $(left) - 10 )) python3 bench/tp.py --zerostart $ZS --out "$OUT/tp.json" --cases "$CASES" \
  --check-8b "$M8" --device-name "$DEV" ${ZS_TP_BENCH_ARGS:-} 2>&1 | tee "$OUT/tp.log" | tail -20
echo "total $((SECONDS - START)) s"
