"""Reading a Hugging Face model directory: config.json and its safetensors weights, one file or
the shards `model.safetensors.index.json` lists (its weight_map: tensor name -> file)."""

import json
import os

from qtrain.safetensors import load_safetensors


def read_hf_config(directory):
    """The text of DIR/config.json (sent to the server as it is)."""
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory}: no config.json (a Hugging Face model directory "
                                "holds config.json and model.safetensors)")
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_hf_weights(directory):
    """{HF tensor name: ndarray} of every tensor in the directory's weights, shards merged.
    ValueError for an index that names a tensor its shard lacks, or a tensor in two shards."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.exists(index):
        single = os.path.join(directory, "model.safetensors")
        if not os.path.exists(single):
            raise FileNotFoundError(f"{directory}: neither model.safetensors nor "
                                    "model.safetensors.index.json")
        return load_safetensors(single)[0]
    with open(index, encoding="utf-8") as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: no weight_map")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        arrays, _ = load_safetensors(os.path.join(directory, shard))
        for name, value in arrays.items():
            if name in tensors:
                raise ValueError(f"{directory}: tensor {name} is in two shards")
            tensors[name] = value
    listed_missing = sorted(n for n in weight_map if n not in tensors)
    if listed_missing:
        raise ValueError(f"{index}: the weight_map lists tensors its shards lack: "
                         + ", ".join(listed_missing[:10]))
    return tensors
