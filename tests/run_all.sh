#!/usr/bin/env bash
# Runs every test zerostart has on a machine without a GPU: the C unit tests (built with
# AddressSanitizer + UBSan), each libFuzzer target for a bounded time, and the Python
# integration tests (pytest) that drive the built binaries. Prints one closing line
# "tests: N passed, N failed" and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
passed=0; failed=0; failures=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== C unit tests (ASan + UBSan)"
for t in build/asan/tests/test_*; do
  [ -x "$t" ] || continue
  if "$t"; then passed=$((passed+1)); else failed=$((failed+1)); failures+=("$t"); fi
done

echo "== fuzz targets (${FUZZ_SECONDS}s each)"
for f in build/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus=build/fuzz/corpus-$name
  mkdir -p "$corpus"
  seeds=tests/fuzz/seeds/${name#fuzz_}
  [ -d "$seeds" ] || seeds=
  if "$f" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=0 \
        "$corpus" $seeds >build/fuzz/$name.log 2>&1; then
    echo "ok $name ($(grep -o 'Done [0-9]* runs' build/fuzz/$name.log | tail -1))"
    passed=$((passed+1))
  else
    echo "not ok $name (see build/fuzz/$name.log)"; tail -40 build/fuzz/$name.log
    failed=$((failed+1)); failures+=("$name")
  fi
done

echo "== Python integration tests"
out=$(mktemp)
.venv/bin/python -m pytest -q -p no:cacheprovider tests/py 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
py_passed=$(grep -Eo '[0-9]+ passed' "$out" | tail -1 | grep -Eo '[0-9]+' || echo 0)
py_failed=$(grep -Eo '[0-9]+ (failed|error)' "$out" | awk '{s+=$1} END {print s+0}')
rm -f "$out"
passed=$((passed+py_passed)); failed=$((failed+py_failed))
if [ "$rc" -ne 0 ] && [ "$py_failed" -eq 0 ]; then failed=$((failed+1)); failures+=("pytest rc=$rc"); fi

[ ${#failures[@]} -eq 0 ] || printf 'failed: %s\n' "${failures[@]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
