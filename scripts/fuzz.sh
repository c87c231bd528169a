#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzzing build (make fuzz) for a bounded time each, starting
# from the generated seed corpus, the committed crash regressions and the corpus earlier runs
# grew (BUILD/fuzz-corpus). Prints executions and coverage per target; fails on any crash,
# leak, timeout or out-of-memory, naming the input that caused it.
#   scripts/fuzz.sh BUILD_DIR [SECONDS_PER_TARGET]
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
targets=(fuzz_safetensors fuzz_checkpoint fuzz_model_spec fuzz_rules fuzz_tensor_convert fuzz_access
  fuzz_hf_config fuzz_dp_message)

"$build/bin/qtrain-fuzz-seeds" "$build/fuzz-seeds"
mkdir -p "$build/fuzz-artifacts"
status=0
printf '%-22s %12s %8s %8s %s\n' target executions cov corpus result
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t"
  mkdir -p "$corpus"
  regressions="$root/tests/fuzz/regressions/$t"
  extra=()
  [ -d "$regressions" ] && extra+=("$regressions")
  log="$build/fuzz-artifacts/$t.log"
  # -rss_limit_mb: the targets refuse models over 64 MiB (tests/fuzz/fuzz_limits.h); anything
  # near the limit is a leak or an unchecked size. ASan's own detect_leaks stays on.
  if "$build/fuzz/$t" "$corpus" "$build/fuzz-seeds/$t" "${extra[@]}" \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" > "$log" 2>&1; then
    result=ok
  else
    result="FAILED (log: $log)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  printf '%-22s %12s %8s %8s %s\n' "$t" "$execs" "$cov" "$(ls "$corpus" | wc -l)" "$result"
  if [ "$result" != ok ]; then
    grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -20 || true
    echo "  reproduce: $build/fuzz/$t $build/fuzz-artifacts/$t-<file>; once fixed, add the input"
    echo "  to tests/fuzz/regressions/$t/ (replayed by make test)"
  fi
done
exit $status
