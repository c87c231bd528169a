#!/usr/bin/python3
"""Compares qtrain's logits for a Hugging Face model directory with transformers' own, for anyone
who has the real library (Debian does not package it): loads DIR in float32 with the class its
config.json names (LlamaForCausalLM, GPT2LMHeadModel, BertModel, ...), imports the same directory
into a qtrain session (Client.import_hf) and runs the same random token ids through both,
comparing the first output (logits, or BertModel's last hidden state). Ids avoid the config's
pad_token_id: HF attends to padding unless given an attention_mask.

Usage: scripts/check_hf.py DIR [--server=HOST:PORT] [--seq_len=N] [--batch=N] [--tolerance=1e-4]
Exit status 0 when the largest difference is within tolerance × the logits' peak, 1 otherwise,
2 when transformers is missing or the arguments are wrong. Needs PYTHONPATH to reach the qtrain
package (build/python) and a running qtrain-server."""

import argparse
import sys

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--server", default=None)
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"check_hf: needs torch and transformers ({e}); pip install transformers",
              file=sys.stderr)
        return 2
    import qtrain

    config = transformers.AutoConfig.from_pretrained(args.dir)
    cls = getattr(transformers, (config.architectures or ["AutoModelForCausalLM"])[0])
    model = cls.from_pretrained(args.dir, torch_dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=generator)
    pad = getattr(config, "pad_token_id", None)
    if pad is not None:
        ids[ids == pad] = (pad + 1) % vocab
    with torch.no_grad():
        want = model(ids)[0].numpy()
    with qtrain.Client(args.server) as c:
        session = "check-hf"
        c.import_hf(session, args.dir, seq_len=args.seq_len)
        try:
            got = c.forward(session, ids.numpy().astype(np.int32))
        finally:
            c.delete_session(session)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{args.dir}: {type(model).__name__}, output {tuple(want.shape)}, largest difference "
          f"{err:.2e} of the peak (tolerance {args.tolerance:g})")
    return 0 if err <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
