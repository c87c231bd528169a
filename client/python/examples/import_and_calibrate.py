#!/usr/bin/python3
"""Calibration as a service for a model trained elsewhere: trains a Fashion-MNIST MLP in
PyTorch, imports its float weights into qtrain-server (ImportWeights), then calibrates static
int8 activation scales (SRQ) with each calibrator — absmax, percentile, mse, entropy — and
prints the test accuracy of each next to the float model's.

    PYTHONPATH=build/python /usr/bin/python3 client/python/examples/import_and_calibrate.py \
        --server 127.0.0.1:50051
"""

import argparse

import numpy as np
import torch

import qtrain

SPEC = {"input": {"shape": [28, 28, 1]}, "body": {"sequential": {"layers": [
    {"flatten": {}}, {"linear": {"features": 256}}, {"activation": {"kind": "RELU"}},
    {"name": "head", "linear": {"features": 10}}]}}}
CALIBRATORS = ["absmax", "percentile,99.99", "percentile,99.9", "mse", "entropy"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default=None, help="host:port (default $QTRAIN_SERVER)")
    ap.add_argument("--epochs", type=int, default=2, help="PyTorch training epochs")
    ap.add_argument("--limit", type=int, default=None, help="training examples to use")
    ap.add_argument("--save_weights", default=None,
                    help="also write the PyTorch weights to this safetensors file (for qtrain ptq)")
    args = ap.parse_args()

    x, y = qtrain.load_fashion_mnist("train", limit=args.limit)
    xt, yt = qtrain.load_fashion_mnist("t10k")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(args.epochs):
        for at in range(0, len(xs), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[at:at + 128]), ys[at:at + 128]).backward()
            opt.step()
    model.eval()
    if args.save_weights:
        qtrain.save_safetensors({k: v.numpy() for k, v in model.state_dict().items()},
                                args.save_weights)
    with torch.no_grad():
        torch_accuracy = float((model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())

    with qtrain.Client(args.server) as c:
        print(f"{'model':28s} test accuracy")
        print(f"{'PyTorch float':28s} {torch_accuracy:.4f}")
        calibration = xt[:2048]  # held-out examples for the statistics
        for method in ["float"] + CALIBRATORS:
            session = f"byom-{method.replace(',', '-').replace('.', '_')}"
            c.import_weights(session, SPEC, model)  # module_map from torch_module_map
            if method != "float":
                c.update_rules(session, {"rules": [{
                    "weight_qtype": "int8", "act_qtype": "int8",
                    "act_calibration_method": method, "act_static_scale": True}]})
                c.calibrate(session, qtrain.batches(calibration, None, batch_size=256))
            out = c.forward(session, xt)
            label = "qtrain float (imported)" if method == "float" else f"SRQ int8, {method}"
            print(f"{label:28s} {float((out.argmax(1) == yt).mean()):.4f}")
            c.delete_session(session)


if __name__ == "__main__":
    main()
