"""A Fashion-MNIST MLP trained in PyTorch (Debian's python3-torch) and the qtrain spec that
mirrors it: the model the bring-your-own-model tests import."""

import numpy as np
import torch

import qtrain

# The qtrain spec that mirrors torch.nn.Sequential(Flatten, Linear(784, 256), ReLU,
# Linear(256, 10)).
SPEC = {"input": {"shape": [28, 28, 1]}, "body": {"sequential": {"layers": [
    {"flatten": {}}, {"linear": {"features": 256}}, {"activation": {"kind": "RELU"}},
    {"name": "head", "linear": {"features": 10}}]}}}


def torch_mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def trained_torch_mlp(examples=6400, epochs=2):
    """The MLP after `epochs` of Adam on the first `examples` training images (seeded)."""
    x, y = qtrain.load_fashion_mnist("train", limit=examples)
    torch.manual_seed(0)
    model = torch_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # The images are HWC; flattening (28, 28, 1) and torch's flattening agree (C = 1).
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for at in range(0, len(xs), 128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[at:at + 128]), ys[at:at + 128]).backward()
            optimizer.step()
    model.eval()
    return model
