#!/usr/bin/env bash
# One table per ISA class this CPU can run (docs/PERFORMANCE.md): the quantized-dot benchmarks at
# 256x1024x1024 and 1024^3, 1 and 2 threads, under QTRAIN_MAX_ISA=<level> for every level below
# the CPU's own (the plain `make bench` run covers the top one), then the training-step
# comparison with PyTorch at avx2. An override measures a code path, not another chip's speed.
# Usage: scripts/bench_isa.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=$build/bench
mkdir -p "$out"
levels=$("$build/bin/qtrain-conformance" --list-isas)
top=$(tail -n 1 <<< "$levels")
for isa in $levels; do
  [ "$isa" = "$top" ] && continue
  echo
  echo "### QTRAIN_MAX_ISA=$isa"
  echo
  QTRAIN_MAX_ISA=$isa "$build/bin/qtrain-bench-qdot" --benchmark_filter='M:(256|1024)/K:1024/N:1024' \
    --benchmark_min_time=0.2 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/qdot_$isa.json" --benchmark_out_format=json >/dev/null 2>"$out/qdot_$isa.log"
  /usr/bin/python3 scripts/bench_report.py "$out/qdot_$isa.json" | sed 1,2d
done
if grep -qx avx2 <<< "$levels" && [ "$top" != avx2 ]; then
  echo
  echo "### Training steps at QTRAIN_MAX_ISA=avx2 (PyTorch held to AVX2 too)"
  echo
  QTRAIN_MAX_ISA=avx2 bash scripts/bench_train.sh "$build"
fi
