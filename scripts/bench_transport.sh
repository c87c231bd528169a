#!/usr/bin/env bash
# The cost of TLS and bearer-token authentication on the Train stream, in one run on this
# machine: build/bin/qtrain-bench-transport (bench/transport_bench.cc), then a markdown table of
# steps/s (median of 5) and each transport's ratio to plaintext.
# Usage: scripts/bench_transport.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
mkdir -p "$build/bench"
"$build/bin/qtrain-bench-transport" --benchmark_min_time=1 --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$build/bench/transport.json" --benchmark_out_format=json > /dev/null 2>&1
/usr/bin/python3 - "$build/bench/transport.json" <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
rate = {}
for b in doc["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    m = re.match(r"BM_TrainStream/transport:(\d)/qat:(\d)/large:(\d)", b["name"])
    rate[tuple(int(g) for g in m.groups())] = b["items_per_second"]
print(f"{doc['context'].get('host_name', '')}, {doc['context']['num_cpus']} CPUs; steps/s, median of 5")
print("| model | mode | plaintext | TLS | TLS + token |")
print("|---|---|---:|---:|---:|")
for large, model in ((0, "MLP 784-256-10"), (1, "MLP 784-1024-1024-10")):
    for qat, mode in ((0, "float"), (1, "int8 QAT")):
        plain = rate[(0, qat, large)]
        cells = [f"{plain:.0f}"] + [
            f"{rate[(t, qat, large)]:.0f} ({rate[(t, qat, large)] / plain - 1:+.1%})" for t in (1, 2)]
        print(f"| {model}, batch 128 | {mode} | " + " | ".join(cells) + " |")
PY
