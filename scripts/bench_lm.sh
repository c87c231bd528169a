#!/usr/bin/env bash
# Language-model training steps, qtrain vs PyTorch, in one run on this machine (issue 22):
# GPT-2 small and a Llama of its size, batch 2 × 256 tokens, 1 and 2 threads. qtrain's side is
# build/bin/qtrain-bench-train's BM_TrainStepLm* (float, w8a8 QAT, 8da4w QAT, QT int8), PyTorch's
# bench/torch_lm_bench.py (float and eager fake-quant w8a8 / 8da4w; OpenBLAS, with
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for it alone). One configuration per process, so
# that each peak RSS is its own. Prints a markdown table of tokens/s and ratios.
# Usage: scripts/bench_lm.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=$build/bench
mkdir -p "$out"
: >"$out/lm_qtrain.jsonl"
: >"$out/lm_torch.jsonl"
modes=(float w8a8 8da4w qt)
for model in Gpt2 Llama; do
  for threads in 1 2; do
    for mode in 0 1 2 3; do
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$build/bin/qtrain-bench-train" \
        --benchmark_filter="^BM_TrainStepLm$model/mode:$mode/threads:$threads/" \
        --benchmark_format=json 2>/dev/null |
        /usr/bin/python3 -c '
import json, sys
b = json.load(sys.stdin)["benchmarks"][0]
print(json.dumps({"model": sys.argv[1].lower(), "mode": sys.argv[2], "threads": int(sys.argv[3]),
                  "tokens_per_s": b["tokens_per_s"], "peak_rss_mb": b["peak_rss_mb"]}))' \
          "$model" "${modes[$mode]}" "$threads" >>"$out/lm_qtrain.jsonl"
    done
    for mode in float w8a8 8da4w; do
      env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 -W ignore \
        bench/torch_lm_bench.py "${model,,}" "$mode" "$threads" >>"$out/lm_torch.jsonl"
    done
  done
done
/usr/bin/python3 - "$out/lm_qtrain.jsonl" "$out/lm_torch.jsonl" <<'PY'
import json, sys
ours = {(r["model"], r["mode"], r["threads"]): r for r in map(json.loads, open(sys.argv[1]))}
torch = {(r["model"], r["mode"], r["threads"]): r for r in map(json.loads, open(sys.argv[2]))}
print("| model | threads | PyTorch float tok/s | PyTorch fake-quant w8a8 / 8da4w tok/s | "
      "qtrain float tok/s (vs PyTorch float) | qtrain w8a8 QAT (vs fake-quant) | "
      "qtrain 8da4w QAT (vs fake-quant) | qtrain QT int8 (vs PyTorch float) | "
      "peak RSS KiB/token qtrain float / PyTorch float |")
print("|---|---|---|---|---|---|---|---|---|")
names = {"gpt2": "GPT-2 small (12×768, vocab 50257, tied)",
         "llama": "Llama-shaped (12×768, GQA 12/4, SwiGLU 2048, vocab 32000)"}
tokens = 2 * 256
for model in ("gpt2", "llama"):
    for t in (1, 2):
        tf, tw, t4 = (torch[(model, m, t)]["tokens_per_s"] for m in ("float", "w8a8", "8da4w"))
        f, w, q4, qt = (ours[(model, m, t)]["tokens_per_s"] for m in ("float", "w8a8", "8da4w", "qt"))
        rss_q = ours[(model, "float", t)]["peak_rss_mb"] * 1024 / tokens
        rss_t = torch[(model, "float", t)]["peak_rss_mb"] * 1024 / tokens
        print(f"| {names[model]} | {t} | {tf:.0f} | {tw:.0f} / {t4:.0f} | {f:.0f} ({f / tf:.2f}×) | "
              f"{w:.0f} ({w / tw:.2f}×) | {q4:.0f} ({q4 / t4:.2f}×) | {qt:.0f} ({qt / tf:.2f}×) | "
              f"{rss_q:.0f} / {rss_t:.0f} |")
PY
