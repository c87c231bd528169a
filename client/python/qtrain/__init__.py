"""qtrain: a Python client of qtrain-server (quantized training over gRPC).

    import qtrain
    with qtrain.Client("127.0.0.1:50051") as c:
        c.create_session("fm", model=qtrain.presets.MLP)
        for step in c.train("fm", qtrain.batches(x, y, batch_size=128)):
            print(step.step, step.loss)

Tensors travel as numpy arrays; checkpoints come back as dicts of arrays.
"""

from qtrain.architectures import torchvision_architecture
from qtrain.client import Client, QtrainError
from qtrain.datasets import (batches, load_idx, load_fashion_mnist, load_tokens, pad_sequences,
                             token_windows)
from qtrain.ptq import PtqResult, ptq
from qtrain.safetensors import load_safetensors, save_safetensors
from qtrain.tensors import from_tensor, to_tensor
from qtrain.torch_import import torch_module_map
from qtrain import presets

__all__ = [
    "Client",
    "QtrainError",
    "batches",
    "from_tensor",
    "load_fashion_mnist",
    "load_idx",
    "load_safetensors",
    "load_tokens",
    "pad_sequences",
    "ptq",
    "PtqResult",
    "save_safetensors",
    "torch_module_map",
    "torchvision_architecture",
    "presets",
    "to_tensor",
    "token_windows",
]
