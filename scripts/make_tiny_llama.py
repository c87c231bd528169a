#!/usr/bin/python3
"""Writes a small random Llama in Hugging Face's layout (config.json + model.safetensors, as
save_pretrained writes them) for trying the language-model path without a download: vocabulary
256 (byte tokens, so `qtrain train --data=TEXT` needs no tokenizer), grouped KV heads, llama3
rope scaling. Its weights are random; a real checkpoint goes the same way.

Usage: scripts/make_tiny_llama.py DIR [--layers=4] [--hidden=128] [--seed=0]
Needs PYTHONPATH to reach the qtrain package (build/python) and numpy."""

import argparse
import json
import os

import numpy as np

import qtrain


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    d, heads = args.hidden, 4
    kv_heads, ff, vocab = 2, 2 * args.hidden + args.hidden // 2, 256
    head_dim = d // heads
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "vocab_size": vocab, "hidden_size": d, "intermediate_size": ff,
              "num_hidden_layers": args.layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "hidden_act": "silu",
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 256},
              "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
              "transformers_version": "4.44.0"}
    rng = np.random.default_rng(args.seed)

    def linear(out, inp):  # nn.Linear's default init scale, (out, in)
        return rng.uniform(-1, 1, (out, inp)).astype(np.float32) / np.sqrt(inp)

    w = {"model.embed_tokens.weight": rng.normal(0, 1, (vocab, d)).astype(np.float32),
         "model.norm.weight": np.ones(d, np.float32),
         "lm_head.weight": linear(vocab, d)}
    for i in range(args.layers):
        layer = f"model.layers.{i}."
        w[layer + "input_layernorm.weight"] = np.ones(d, np.float32)
        w[layer + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
        w[layer + "self_attn.q_proj.weight"] = linear(heads * head_dim, d)
        w[layer + "self_attn.k_proj.weight"] = linear(kv_heads * head_dim, d)
        w[layer + "self_attn.v_proj.weight"] = linear(kv_heads * head_dim, d)
        w[layer + "self_attn.o_proj.weight"] = linear(d, heads * head_dim)
        w[layer + "mlp.gate_proj.weight"] = linear(ff, d)
        w[layer + "mlp.up_proj.weight"] = linear(ff, d)
        w[layer + "mlp.down_proj.weight"] = linear(d, ff)
    os.makedirs(args.dir, exist_ok=True)
    with open(os.path.join(args.dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    qtrain.save_safetensors(w, os.path.join(args.dir, "model.safetensors"),
                            metadata={"format": "pt"})
    print(f"wrote {args.dir}: LlamaForCausalLM, {args.layers} layers, hidden {d}, "
          f"{sum(v.size for v in w.values())} parameters")


if __name__ == "__main__":
    main()
