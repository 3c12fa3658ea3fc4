#!/usr/bin/env bash
# Everything one device-machine call does for the CUDA engine, most important first (each
# stage time-boxed; logs land in OUTDIR as they go): CPU-vs-CUDA logits on the tiny models
# (tests/gpu/tiny_gpu_models.py), bench/engine.py on the 8B-shaped synthetic model (zerostart
# and transformers), decode with cuBLAS instead of the own GEMV kernel (ZS_CUDA_GEMV=0) for
# comparison; with ZS_FULL=1 also zerostart vs transformers logits/greedy (tiny models and the
# 8B shape), CPU-vs-CUDA on the unscaled tiny models of tests/py/tiny_model.py and with the
# general attention kernel only. Expects the carried build in build/dev
# (make STATIC_DEPS=1 REL=build/dev gpu-build). Usage: bash bench/run_engine_device.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_engine_device.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! ldconfig -p | grep -q libcublas.so.13 && [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
  LD_LIBRARY_PATH=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))'):${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH
fi
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
B=build/dev/test_cuda_engine
M8=/tmp/zs-llama3-8b
python3 tests/gpu/tiny_gpu_models.py /tmp/tg >/dev/null || echo "tiny gpu models: FAILED"
echo "== cuda vs cpu, tiny_gpu_models (auto attention)"
timeout 60 $B compare /tmp/tg/* >"$OUT/compare_gpu_models.log" 2>&1; echo "rc=$?"
grep -E "not ok|passed" "$OUT/compare_gpu_models.log" | head -30
grep -vE "^(ok|not ok)" "$OUT/compare_gpu_models.log" | head -6
echo "== bench (8B shape)"
timeout ${ZS_BENCH_S:-130} python3 bench/engine.py --model $M8 --out "$OUT/engine.json" ${ZS_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1; echo "rc=$?"
tail -8 "$OUT/bench.log"
echo "== decode with cuBLAS only (ZS_CUDA_GEMV=0)"
ZS_CUDA_GEMV=0 timeout 40 $B bench $M8 --prefill 512 --decode 128 --reps 1 2>&1 | tee "$OUT/decode_cublas.json"
[ "${ZS_FULL:-0}" = 1 ] || exit 0
echo "== zerostart vs transformers, tiny bf16"
timeout 50 python3 bench/engine_vs_transformers.py --bin $B --tiny /tmp/tmhf --dtypes bf16 --out "$OUT/vs_hf_tiny.json" >"$OUT/vs_hf_tiny.log" 2>&1; echo "rc=$?"
tail -1 "$OUT/vs_hf_tiny.log"
echo "== zerostart vs transformers, 8B shape"
timeout 60 python3 bench/engine_vs_transformers.py --bin $B --model $M8 --prompt 64 --out "$OUT/vs_hf_8b.json" >"$OUT/vs_hf_8b.log" 2>&1; echo "rc=$?"
tail -2 "$OUT/vs_hf_8b.log" | cut -c1-600
echo "== cuda vs cpu, tests/py/tiny_model.py models"
python3 tests/py/tiny_model.py /tmp/tm >/dev/null
timeout 60 $B compare /tmp/tm/* >"$OUT/compare.log" 2>&1; echo "rc=$?"
tail -1 "$OUT/compare.log"
echo "== cuda vs cpu, tiny_gpu_models (simple attention)"
ZS_CUDA_ATTN=simple timeout 40 $B compare /tmp/tg/* >"$OUT/compare_simple.log" 2>&1; echo "rc=$?"
grep -E "not ok|passed" "$OUT/compare_simple.log" | head -20
