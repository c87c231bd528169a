#!/usr/bin/python3
"""PyTorch side of the language-model training-step comparison (bench/train_bench.cc's
BM_TrainStepLm* measure qtrain; scripts/bench_lm.sh runs both).

Models: the PyTorch GPT2LMHeadModel and LlamaForCausalLM of client/python/tests/hf_reference.py
(written from transformers' modeling code; eager attention) with the benchmark's configs:
GPT-2 small (12 layers, d 768, 12 heads, vocabulary 50257, tied head) and a Llama of its size
(GQA 12 / 4, SwiGLU 2048, vocabulary 32000); batch 2 × 256 tokens, causal-LM cross-entropy,
plain SGD. Modes: "float"; "w8a8" and "8da4w", eager fake quantization of every linear layer
but lm_head in plain PyTorch, torchao-style with a straight-through estimator: int8 weights per
output channel or int4 weights per group of 32 inputs, int8 activations per token, symmetric
scales absmax / (qmax + 0.5) as Qwix's.

Usage: torch_lm_bench.py MODEL MODE THREADS (one configuration per process, so that its peak
RSS is its own). Prints one JSON object: {"model", "mode", "threads", "ms", "tokens_per_s",
"peak_rss_mb"}; ms is the fastest of 3 steps after one warm-up step.
"""
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "client", "python", "tests"))
from hf_reference import Conv1D, GPT2LMHeadModel, LlamaForCausalLM  # noqa: E402

GPT2 = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "layer_norm_epsilon": 1e-5}
LLAMA = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 768,
         "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12,
         "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
BATCH, SEQ = 2, 256


def fake_quant(x, bits, group):
    """Symmetric fake quantization along the last axis in groups of `group` (the whole axis for
    None): scale absmax / (qmax + 0.5); the gradient passes straight through."""
    qmax = 2 ** (bits - 1) - 1
    shape = x.shape
    g = x.reshape(*shape[:-1], -1, group or shape[-1])
    scale = g.detach().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / (qmax + 0.5)
    q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax) * scale
    return x + (q.reshape(shape) - x).detach()


def quantize_linears(model, weight_bits, group):
    """Every nn.Linear / Conv1D but lm_head computes with fake-quantized weights and inputs."""
    for name, m in model.named_modules():
        if name == "lm_head":
            continue
        if isinstance(m, torch.nn.Linear):
            m.forward = (lambda m: lambda x: torch.nn.functional.linear(
                fake_quant(x, 8, None), fake_quant(m.weight, weight_bits, group), m.bias))(m)
        elif isinstance(m, Conv1D):  # weight (in, out): groups run along its first axis
            m.forward = (lambda m: lambda x: fake_quant(x, 8, None) @ fake_quant(
                m.weight.t(), weight_bits, group).t() + m.bias)(m)


def main():
    model_name, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2) if model_name == "gpt2" else LlamaForCausalLM(LLAMA)
    if mode == "w8a8":
        quantize_linears(model, 8, None)
    elif mode == "8da4w":
        quantize_linears(model, 4, 32)
    ids = torch.randint(0, 32000, (BATCH, SEQ))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
    step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    ms = min(times) * 1e3
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"model": model_name, "mode": mode, "threads": threads, "ms": round(ms, 1),
                      "tokens_per_s": round(BATCH * SEQ / (ms / 1e3), 1),
                      "peak_rss_mb": round(rss, 1)}), flush=True)


if __name__ == "__main__":
    main()
