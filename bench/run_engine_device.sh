#!/usr/bin/env bash
# Everything one device-machine call does for the CUDA engine, most important first (each
# stage time-boxed, ZS_TOTAL_S = 285 s in all; logs land in OUTDIR as they go):
#   1. the GPU tests (tests/gpu/run.sh: loader, CLI, CUDA vs CPU engine on the tiny models of
#      tests/gpu/tiny_gpu_models.py with both attention kernels);
#   2. decode tokens/s on the 8B-shaped synthetic model (written first) with CUDA graphs and
#      fused ops (default), without graphs (ZS_CUDA_GRAPH=0) and without both (ZS_CUDA_GRAPH=0
#      ZS_CUDA_FUSE=0, the previous decode path);
#   3. bench/engine.py (prefill and decode; transformers too unless ZS_SKIP_HF=1);
#   4. zerostart vs transformers (bf16 and float32) on the tiny bf16 models, then on the 8B
#      shape (bench/engine_vs_transformers.py).
# Expects the carried build in build/dev (make STATIC_DEPS=1 REL=build/dev gpu-build).
# Usage: bash bench/run_engine_device.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_engine_device.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! ldconfig -p | grep -q libcublas.so.13 && [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
  LD_LIBRARY_PATH=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))'):${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH
fi
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s]"; }
# time box of a stage: its own limit, cut to what is left of ZS_TOTAL_S (default 285 s)
box() { local left=$(( ${ZS_TOTAL_S:-285} - ($(date +%s) - T0) )); [ "$left" -lt "$1" ] && echo $(( left > 1 ? left : 1 )) || echo "$1"; }
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B=build/dev/test_cuda_engine
M8=/tmp/zs-llama3-8b
echo "== gpu tests $(el)"
ZS_BIN=build/dev/zerostart timeout $(box 80) bash tests/gpu/run.sh >"$OUT/gpu_tests.log" 2>&1; echo "rc=$?"
grep -E "^(ok|not ok) [a-z_]+$|gpu tests:|passed, " "$OUT/gpu_tests.log"
grep -E "^not ok /" "$OUT/gpu_tests.log" | head -20
echo "== synthetic 8B-shaped model $(el)"
timeout $(box 70) python3 -c "import sys; sys.path.insert(0, 'bench'); import engine; engine.ensure_model('build/dev/zerostart', '$M8')"; echo "rc=$?"
echo "== decode tok/s: graphs + fused ops (default); no graphs; neither (previous path) $(el)"
timeout $(box 15) $B bench $M8 --prefill 512 --decode 128 --reps 1 2>&1 | tee "$OUT/decode_default.json"
ZS_CUDA_GRAPH=0 timeout $(box 15) $B bench $M8 --prefill 512 --decode 128 --reps 1 2>&1 | tee "$OUT/decode_nograph.json"
ZS_CUDA_GRAPH=0 ZS_CUDA_FUSE=0 timeout $(box 15) $B bench $M8 --prefill 512 --decode 128 --reps 1 2>&1 | tee "$OUT/decode_unfused.json"
echo "== bench (8B shape) $(el)"
HF=; [ "${ZS_SKIP_HF:-0}" = 1 ] && HF=--skip-hf
timeout $(box 60) python3 bench/engine.py --model $M8 --out "$OUT/engine.json" $HF >"$OUT/bench.log" 2>&1; echo "rc=$?"
tail -3 "$OUT/bench.log"
echo "== zerostart vs transformers, tiny bf16 $(el)"
timeout $(box 45) python3 bench/engine_vs_transformers.py --bin $B --tiny /tmp/tmhf --dtypes bf16 --out "$OUT/vs_hf_tiny.json" >"$OUT/vs_hf_tiny.log" 2>&1; echo "rc=$?"
grep -vE '^\{' "$OUT/vs_hf_tiny.log" | tail -16
echo "== zerostart vs transformers, 8B shape $(el)"
timeout $(box 50) python3 bench/engine_vs_transformers.py --bin $B --model $M8 --prompt 64 --out "$OUT/vs_hf_8b.json" >"$OUT/vs_hf_8b.log" 2>&1; echo "rc=$?"
grep -vE '^\{' "$OUT/vs_hf_8b.log" | tail -3
echo "== done $(el)"
