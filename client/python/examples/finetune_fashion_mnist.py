#!/usr/bin/python3
"""Pre-trains a Fashion-MNIST MLP in float on qtrain-server, fine-tunes it with int8 QAT, then
int8 QT (the rules switch between steps; the float weights carry over), calibrates static
activation scales and prints the quant stats.

    PYTHONPATH=build/python /usr/bin/python3 client/python/examples/finetune_fashion_mnist.py \
        --server 127.0.0.1:50051
"""

import argparse
import time

import numpy as np

import qtrain

# The images travel as their bytes; the server takes pixel * PIXEL in float32.
PIXEL = np.float32(1 / 255)


def train(client, session, x, y, label):
    start, last = time.time(), None
    for last in client.train(session, qtrain.batches(x, y, 128, shuffle=True, seed=len(label)),
                             input_scale=PIXEL):
        pass
    rate = last.step and (len(x) + 127) // 128 / (time.time() - start)
    print(f"{label:9s} step {last.step:5d}  loss {last.loss:.4f}  {rate:7.1f} steps/s", end="")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=None, help="host:port (default $QTRAIN_SERVER)")
    ap.add_argument("--limit", type=int, default=None, help="training examples to use")
    args = ap.parse_args()

    x, y = qtrain.load_fashion_mnist("train", limit=args.limit, dtype=np.uint8)
    xt, yt = qtrain.load_fashion_mnist("t10k", dtype=np.uint8)
    with qtrain.Client(args.server) as c:
        session = c.create_session(model=qtrain.presets.MLP, optimizer=qtrain.presets.ADAMW,
                                   seed=1).session_id
        for label, rules in (("float", qtrain.presets.FLOAT),
                             ("QAT int8", qtrain.presets.QAT_INT8),
                             ("QT int8", qtrain.presets.QT_INT8)):
            c.update_rules(session, rules)
            train(c, session, x, y, label)
            acc = c.evaluate(session, qtrain.batches(xt, yt, 500), input_scale=PIXEL).accuracy
            print(f"  test accuracy {acc:.4f}")

        c.update_rules(session, qtrain.presets.SRQ_INT8)
        stats = c.calibrate(session, qtrain.batches(x[:2560], batch_size=128), input_scale=PIXEL)
        print(f"\ncalibrated quant stats (session {session}, step {stats.step}):")
        print(f"{'module':10s} {'stat':18s} {'count':>5s}  qtype  scale")
        for r in qtrain.Client.stats_rows(stats):
            scale = r["scale"].ravel()[0] if r["scale"] is not None else r["scale_error"]
            print(f"{r['module_path']:10s} {r['name']:18s} {r['count']:5d}  {r['qtype']:5s}  "
                  f"{scale:.6g}")
        c.delete_session(session)


if __name__ == "__main__":
    main()
