#!/usr/bin/env bash
# GPU tests (`make test-gpu`, on a machine with a CUDA GPU): the C GPU loader tests on a
# small synthetic model, `zerostart load --verify` on cuda through the CLI, and the CUDA
# engine against the CPU engine on tiny models; with 2 or more GPUs also tensor parallel (the
# sliced load verified byte for byte, the NCCL engine against the one-GPU engine). The binaries
# come from the build folder of ZS_BIN (default build/rel), built by `make test-gpu`.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${ZS_BIN:-build/rel/zerostart}
REL=$(dirname "$BIN")
MODEL=${ZS_GPU_TEST_MODEL:-/tmp/zs-gpu-test-model}
passed=0; failed=0
check() { local name=$1; shift; if "$@"; then echo "ok $name"; passed=$((passed+1)); else echo "not ok $name"; failed=$((failed+1)); fi; }

bad_device() { local out; out=$("$BIN" load "$MODEL" --device cuda:42 2>&1) && return 1; grep -q 'cuda:42' <<<"$out"; }

"$BIN" synth "$MODEL" --shape small --seed 3 >/dev/null || exit 1
check test_gpu_loader "$REL/test_gpu_loader" "$MODEL"
check cli_load_verify_cuda "$BIN" load "$MODEL" --device cuda:0 --verify
check cli_load_verify_cpu "$BIN" load "$MODEL" --device cpu --verify
check cli_bad_device bad_device
# admission waits for the asynchronous copies of holders it evicted to the KV store
check kv_evict_admit python3 tests/gpu/kv_evict_admit.py "$BIN" "$MODEL"
# a restore from a slow disk copies blocks into the KV cache while the rest are read
check kv_restore_overlap python3 tests/gpu/kv_restore_overlap.py "$BIN" "$MODEL"
# CUDA engine against the CPU engine on the well-conditioned tiny models of every variant
# (transformers-style initialisation, see tests/gpu/tiny_gpu_models.py; needs numpy and
# safetensors), with both attention kernels; decode steps run as CUDA graphs
TINY=${ZS_GPU_TINY:-/tmp/zs-gpu-tiny}
if python3 tests/gpu/tiny_gpu_models.py "$TINY" >/dev/null 2>&1; then
  check cuda_engine_vs_cpu "$REL/test_cuda_engine" compare "$TINY"/*
  check cuda_engine_vs_cpu_simple_attn env ZS_CUDA_ATTN=simple "$REL/test_cuda_engine" compare "$TINY"/*
  check cuda_kv_transfer "$REL/test_cuda_engine" kv-transfer "$TINY"/*
  check cuda_kv_transfer_copy_engine env ZS_KV_TRANSFER=copy "$REL/test_cuda_engine" kv-transfer "$TINY"/*
  check cuda_kv_transfer_whole_blocks env ZS_KV_TRANSFER=blocks "$REL/test_cuda_engine" kv-transfer "$TINY"/*
else
  echo "skip cuda_engine_vs_cpu (tests/gpu/tiny_gpu_models.py needs numpy and safetensors)"
fi
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
for N in 2 4; do
  [ "$NGPU" -ge "$N" ] || { echo "skip tensor parallel over $N GPUs ($NGPU GPUs)"; continue; }
  check cli_load_tp${N}_verify "$BIN" load "$MODEL" --device cuda:0 --tp $N --verify
  [ -d "$TINY" ] && check cuda_tp${N}_vs_one_gpu "$REL/test_cuda_engine" compare-tp $N "$TINY"/*
done
echo "gpu tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
