#!/usr/bin/env bash
# One GPU-machine call for the KV warm-start benchmark (issue 6): the 8B-shaped synthetic
# checkpoint (written when missing), then bench/kv.py on cuda:0 (prefixes of 8k and 32k tokens,
# the 10-turn chat), under a time limit; kv.json, the table, bench/kv.py's log and an archive of
# every server's log (serve-logs.tgz) land in OUTDIR.
# Expects the release binary in build/dev, built here and carried:
#   make STATIC_DEPS=1 REL=build/dev build/dev/zerostart
# (when it is missing, the script tries that build on the machine, which needs the -dev
# packages of `make deps` there).
# Usage (on the GPU machine): bash bench/run_kv_device.sh OUTDIR [TOTAL_SECONDS]
#   ZS_BENCH_MODEL   checkpoint directory (default /tmp/zs-m8b; its max_position_embeddings is
#                    raised to 40960 for the 32k prefix, as bench/engine.py does)
#   ZS_KV_WORKDIR    server logs and the --kv-disk directories (default /tmp/zs-kv-bench): must
#                    be on the disk, not tmpfs (the result records its file system type)
#   ZS_KV_BENCH_ARGS more bench/kv.py arguments, e.g. "--prefixes 8192" when time is short
#   ZS_BIN, ZS_KV_DEVICE  another binary / device (a dry run elsewhere: ZS_KV_DEVICE=cpu)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: run_kv_device.sh OUTDIR [TOTAL_SECONDS]}
TOTAL=${2:-560}
START=$SECONDS
left() { echo $((TOTAL - (SECONDS - START))); }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); else GPU="no GPU"; fi
DEV="$GPU, $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB RAM"
ZS=${ZS_BIN:-build/dev/zerostart}
if [ ! -x "$ZS" ]; then
  echo "== $ZS missing: building it here"
  if ! make -j"$(nproc)" STATIC_DEPS=1 REL=build/dev build/dev/zerostart >"$OUT/build.log" 2>&1; then
    tail -20 "$OUT/build.log"
    echo "build failed: build it on the workstation (make STATIC_DEPS=1 REL=build/dev build/dev/zerostart) and carry build/dev"
    exit 1
  fi
fi
MODEL=${ZS_BENCH_MODEL:-/tmp/zs-m8b}
if [ ! -f "$MODEL/config.json" ]; then
  echo "== synth $MODEL ($(left) s left)"
  timeout 150 "$ZS" synth "$MODEL" --shape llama3-8b --seed 1 >/dev/null || { echo "synth failed"; exit 1; }
fi
WORK=${ZS_KV_WORKDIR:-/tmp/zs-kv-bench}
rm -rf "$WORK" && mkdir -p "$WORK"
echo "== $DEV; workdir $WORK ($(df -T "$WORK" | awk 'NR==2{print $2", "$5" free"}'))"
echo "== bench/kv.py ($(left) s left)"
# shellcheck disable=SC2086  # ZS_KV_BENCH_ARGS is a list of arguments
timeout $(( $(left) - 20 )) python3 bench/kv.py --zerostart "$ZS" --model "$MODEL" --device "${ZS_KV_DEVICE:-cuda:0}" \
  --workdir "$WORK" --out "$OUT/kv.json" --device-name "$DEV" ${ZS_KV_BENCH_ARGS:-} >"$OUT/kv.table" 2>"$OUT/kv.log"
echo "bench/kv.py rc=$?"
cat "$OUT/kv.table"
grep -E "ANOMALY|Error|error" "$OUT/kv.log" | head -20
# one archive of every server's log (a device call brings back only a few files)
tar -czf "$OUT/serve-logs.tgz" -C "$WORK" $(cd "$WORK" && ls serve-*.log 2>/dev/null) 2>/dev/null
rm -rf "$WORK"
echo "total $((SECONDS - START)) s"
