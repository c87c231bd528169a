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


def _train(model, xs, y, epochs, lr):
    """`epochs` of Adam over (xs, y) in batches of 128, in order; the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ys = torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for at in range(0, len(xs), 128):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[at:at + 128]), ys[at:at + 128]).backward()
            optimizer.step()
    model.eval()
    return model


def trained_torch_mlp(examples=6400, epochs=2):
    """The MLP after `epochs` of Adam on the first `examples` training images (seeded)."""
    x, y = qtrain.load_fashion_mnist("train", limit=examples)
    torch.manual_seed(0)
    # The images are HWC; flattening (28, 28, 1) and torch's flattening agree (C = 1).
    return _train(torch_mlp(), torch.from_numpy(x), y, epochs, 1e-3)


# The qtrain spec that mirrors torch_cnn(): two 3x3 convolutions (padding 1) with ReLU and 2x2
# max pooling, then torch.nn.Flatten of the (16, 7, 7) NCHW maps and a Linear — whose inputs
# PyTorch orders (c, h, w) and qtrain (h, w, c): the importer reorders them.
CNN_SPEC = {"input": {"shape": [28, 28, 1]}, "body": {"sequential": {"layers": [
    {"conv2d": {"features": 8, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
    {"pool": {"kind": "MAX", "window": [2, 2]}},
    {"conv2d": {"features": 16, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
    {"pool": {"kind": "MAX", "window": [2, 2]}},
    {"flatten": {}}, {"name": "head", "linear": {"features": 10}}]}}}
CNN_MAP = {"Conv_0": "0", "Conv_1": "3", "head": "7"}


def torch_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10))


def nchw(x):
    """NHWC images (qtrain's layout) as the NCHW tensor PyTorch's convolutions take."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def trained_torch_cnn(examples=6400, epochs=2):
    """The CNN after `epochs` of Adam on the first `examples` training images (seeded)."""
    x, y = qtrain.load_fashion_mnist("train", limit=examples)
    torch.manual_seed(0)
    return _train(torch_cnn(), nchw(x), y, epochs, 2e-3)
