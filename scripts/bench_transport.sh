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
    m = re.match(r"BM_TrainStream/transport:(\d)/qat:(\d)/large:(\d)/u8:(\d)", b["name"])
    rate[tuple(int(g) for g in m.groups())] = b["items_per_second"]
print(f"{doc['context'].get('host_name', '')}, {doc['context']['num_cpus']} CPUs; steps/s, median of 5")
print("Inputs as F32, or as U8 with scale 1/255 (a quarter of the bytes); each transport's ratio to")
print("plaintext with the same inputs.")
print("| model | mode | inputs | plaintext | TLS | TLS + token |")
print("|---|---|---|---:|---:|---:|")
for large, model in ((0, "MLP 784-256-10"), (1, "MLP 784-1024-1024-10")):
    for qat, mode in ((0, "float"), (1, "int8 QAT")):
        for u8, inputs in ((0, "F32"), (1, "U8")):
            plain = rate[(0, qat, large, u8)]
            cells = [f"{plain:.0f}"] + [
                f"{rate[(t, qat, large, u8)]:.0f} ({rate[(t, qat, large, u8)] / plain - 1:+.1%})"
                for t in (1, 2)]
            print(f"| {model}, batch 128 | {mode} | {inputs} | " + " | ".join(cells) + " |")
PY
