#!/usr/bin/env bash
# Data-parallel scaling on this machine, in one run: build/bin/qtrain-bench-dp
# (bench/dp_bench.cc: 1 rank × 1 thread against 2 ranks × 1 thread on the same global batch,
# ranks on 127.0.0.1), then a markdown table of step times (median of 3), speedup, scaling
# efficiency, the all-reduce's share of the step and the overlap achieved, and the cost model of
# docs/scaling.md with these compute times.
# Usage: scripts/bench_dp.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
mkdir -p "$build/bench"
"$build/bin/qtrain-bench-dp" --benchmark_min_time=1 --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$build/bench/dp.json" --benchmark_out_format=json > /dev/null 2>&1
/usr/bin/python3 - "$build/bench/dp.json" <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
runs = {}
for b in doc["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    m = re.match(r"BM_DataParallelStep/model:(\d)/ranks:(\d)/mode:(\d)/bucket_mb:(\d+)", b["name"])
    runs[tuple(int(g) for g in m.groups())] = b
print(f"{doc['context']['num_cpus']} CPUs; ms per step, median of 3; ranks are 1-thread processes' "
      "equivalents (threads of one process) on 127.0.0.1")
print("| model | mode | bucket | 1 rank | 2 ranks | speedup | efficiency | all-reduce | share of step | overlap |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
models = {0: ("MLP 784-1024-1024-10, batch 256", 1863690), 1: ("transformer block, batch 16×128", 3152384)}
for model, (name, params) in models.items():
    for mode, label in ((0, "float"), (1, "int8 QAT")):
        one = runs[(model, 1, mode, 25)]["real_time"]
        for bucket in (25, 2):
            r = runs[(model, 2, mode, bucket)]
            two = r["real_time"]
            reduce, exposed = r["reduce_ms"], r["exposed_ms"]
            overlap = max(0.0, 1 - exposed / reduce) if reduce > 0 else 0
            print(f"| {name} | {label} | {bucket} MiB | {one:.1f} | {two:.1f} | {one / two:.2f}× | "
                  f"{one / two / 2:.0%} | {reduce:.1f} ms | {reduce / two:.0%} | {overlap:.0%} |")
print()
print("Cost model (docs/scaling.md): per step, compute = 1-rank time / N, ring all-reduce =")
print("2(N−1)/N × gradient bytes ÷ bandwidth, fully exposed (no overlap credited).")
print("| model | N | compute | 10 Gb/s | 25 Gb/s | 100 Gb/s |")
print("|---|---:|---:|---:|---:|---:|")
for model, (name, params) in models.items():
    one = runs[(model, 1, 0, 25)]["real_time"]
    for n in (2, 4, 8, 16):
        compute = one / n
        cells = []
        for gbps in (10, 25, 100):
            comm = 2 * (n - 1) / n * params * 4 * 8 / (gbps * 1e9) * 1e3
            step = compute + comm
            cells.append(f"{step:.1f} ms ({one / step:.1f}×)")
        print(f"| {name} (float) | {n} | {compute:.1f} ms | " + " | ".join(cells) + " |")
PY
