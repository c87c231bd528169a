#!/usr/bin/env bash
# Training-step comparison, qtrain vs PyTorch, in one run on this machine: runs
# build/bin/qtrain-bench-train and bench/torch_train_bench.py (OpenBLAS, OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset for that command only) and prints a markdown table with the ratios.
# Both sides report their fastest of 5 repetitions: this VM's noise only ever adds time.
# Under QTRAIN_MAX_ISA=avx2 / avx2_vnni PyTorch is held to AVX2 too (ATEN_CPU_CAPABILITY=avx2,
# OpenBLAS's Haswell kernels, its oneDNN capped by ONEDNN_MAX_CPU_ISA), so both sides run the
# code paths of an AVX2-only CPU.
# Usage: [QTRAIN_MAX_ISA=LEVEL] scripts/bench_train.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=$build/bench
mkdir -p "$out"
# qtrain's OpenBLAS float GEMM candidate runs under the same OpenBLAS settings as PyTorch's:
# its best kernels, or Haswell's under an AVX2 cap (qtrain takes OpenBLAS only within the cap).
ours_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
case "${QTRAIN_MAX_ISA:-}" in
  avx2 | avx2_vnni) ours_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell) ;;
esac
# The language models (BM_TrainStepLm*) run one per process in scripts/bench_lm.sh.
"${ours_env[@]}" "$build/bin/qtrain-bench-train" --benchmark_min_time=0.3 --benchmark_repetitions=5 \
  --benchmark_filter='BM_(TrainStep(Mlp|TransformerBlock|Resnet18|MobilenetV2)|Forward)' \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/train.json" --benchmark_out_format=json >/dev/null
torch_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
# PyTorch's convolutions run on its bundled oneDNN, which ATEN_CPU_CAPABILITY does not cap.
case "${QTRAIN_MAX_ISA:-}" in
  avx2) torch_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2) ;;
  avx2_vnni) torch_env=(env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2_VNNI DNNL_MAX_CPU_ISA=AVX2_VNNI) ;;
esac
"${torch_env[@]}" /usr/bin/python3 -W ignore bench/torch_train_bench.py 1 2 >"$out/torch_train.jsonl"
/usr/bin/python3 - "$out/train.json" "$out/torch_train.jsonl" <<'PY'
import json, re, sys
names = {"Mlp": "mlp", "TransformerBlock": "block", "Resnet18": "resnet18",
         "MobilenetV2": "mobilenet_v2"}
ours = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "min":
        continue
    m = re.match(r"BM_(TrainStep|Forward)(\w+)/mode:(\d)/threads:(\d)", b["name"])
    ours[(m.group(1), names[m.group(2)], int(m.group(3)), int(m.group(4)))] = b["real_time"]
torch = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    torch[(r["model"], r["mode"], r["threads"])] = r["ms"]
print("| model | threads | PyTorch float ms | PyTorch fake-quant QAT ms | qtrain float ms (vs PyTorch float) | qtrain QAT int8 ms (vs PyTorch QAT) | qtrain QT int8 ms (vs PyTorch float) |")
print("|---|---|---|---|---|---|---|")
for model, name in (("mlp", "MLP 784-1024-1024-10, batch 256"),
                    ("block", "transformer block d512 h8 ff2048, seq 128, batch 16"),
                    ("resnet18", "torchvision ResNet-18, 64x64, batch 32"),
                    ("mobilenet_v2", "torchvision MobileNetV2, 64x64, batch 32")):
    for t in (1, 2):
        tf, tq = torch[(model, "float", t)], torch[(model, "qat", t)]
        f, q, qt = (ours[("TrainStep", model, mode, t)] for mode in (0, 1, 2))
        print(f"| {name} | {t} | {tf:.1f} | {tq:.1f} | {f:.1f} ({tf / f:.2f}× faster) | "
              f"{q:.1f} ({tq / q:.2f}× faster) | {qt:.1f} ({tf / qt:.2f}× faster) |")
print()
print("| inference (Forward) | threads | PyTorch float eval ms | qtrain float ms (vs PyTorch) | qtrain int8 ms (vs PyTorch) |")
print("|---|---|---|---|---|")
for model, name in (("resnet18", "ResNet-18, 64x64, batch 32"),
                    ("mobilenet_v2", "MobileNetV2, 64x64, batch 32")):
    for t in (1, 2):
        tf = torch[(model, "infer", t)]
        f, q = ours[("Forward", model, 0, t)], ours[("Forward", model, 1, t)]
        print(f"| {name} | {t} | {tf:.1f} | {f:.1f} ({tf / f:.2f}× faster) | "
              f"{q:.1f} ({tf / q:.2f}× faster) |")
PY
