#!/usr/bin/python3
"""Turns a Google Benchmark JSON file from qtrain-bench-qdot into ratio tables.

Each row is a shape and thread count (medians when the run has repetitions); each column the time of one benchmark and its speed-up
over the baseline measured in the same run (f32 matmul for forward numbers, the float backward
for backward numbers). Usage: bench_report.py build/bench/qdot.json
"""
import json
import re
import sys


def load(path):
    with open(path) as f:
        doc = json.load(f)
    rows = {}
    aggregated = any(b.get("run_type") == "aggregate" for b in doc["benchmarks"])
    for b in doc["benchmarks"]:
        if aggregated and b.get("aggregate_name") != "median":
            continue
        m = re.match(r"BM_(\w+)/M:(\d+)/K:(\d+)/N:(\d+)/threads:(\d+)", b["name"])
        if not m or b.get("error_occurred"):
            continue
        name, mm, k, n, t = m.group(1), *map(int, m.groups()[1:])
        rows.setdefault((t, mm, k, n), {})[name] = b
    return doc.get("context", {}), rows


def bandwidth(doc_path):
    with open(doc_path) as f:
        doc = json.load(f)
    out = {}
    for b in doc["benchmarks"]:
        for name in ("MemoryReadBandwidth", "MemoryCopyBandwidth"):
            if b["name"].startswith("BM_" + name) and b.get("aggregate_name", "median") == "median":
                out[name] = b.get("bytes_per_second", 0) / 1e9
    return out


def ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    context, rows = load(sys.argv[1])
    print(f"host: {context.get('host_name', '?')}, {context.get('num_cpus', '?')} CPUs, "
          f"date {context.get('date', '?')}\n")
    print("| threads | M×K×N | f32 matmul ms | int8 kernel ms (×) | QAT fwd int8 ms (× f32) "
          "| fake-quant fwd ms (× f32) | int8 fwd vs fake-quant | float bwd ms | QT bwd int8 ms (×) "
          "| quantize GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (t, m, k, n), r in sorted(rows.items()):
        need = ["MatmulF32", "MatmulInt8Kernel", "QatForwardInt8", "QatForwardFakeQuant",
                "FloatBackward", "QtBackwardInt8", "QuantizeRows"]
        if any(x not in r for x in need):
            continue
        f32 = ms(r["MatmulF32"])
        i8 = ms(r["MatmulInt8Kernel"])
        qat = ms(r["QatForwardInt8"])
        fake = ms(r["QatForwardFakeQuant"])
        fbwd = ms(r["FloatBackward"])
        qt = ms(r["QtBackwardInt8"])
        gbs = r["QuantizeRows"].get("bytes_per_second", 0) / 1e9
        print(f"| {t} | {m}×{k}×{n} | {f32:.2f} | {i8:.2f} ({f32 / i8:.2f}×) "
              f"| {qat:.2f} ({f32 / qat:.2f}×) | {fake:.2f} ({f32 / fake:.2f}×) "
              f"| {fake / qat:.2f}× faster | {fbwd:.2f} | {qt:.2f} ({fbwd / qt:.2f}×) | {gbs:.1f} |")


def print_bandwidth(path):
    bw = bandwidth(path)
    if bw:
        print(f"\nMemory bandwidth, 1 thread, 64 MiB: read {bw.get('MemoryReadBandwidth', 0):.1f} GB/s, "
              f"copy {bw.get('MemoryCopyBandwidth', 0):.1f} GB/s (read + write). The quantize column "
              "counts 4 bytes read + 1 written per element.")


if __name__ == "__main__":
    main()
    print_bandwidth(sys.argv[1])
