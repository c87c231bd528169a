"""The module_map of ImportWeights for PyTorch models shaped like the spec (no torch import:
anything with named_modules() and parameters() works)."""

from google.protobuf import json_format

# Spec layer kind -> (qtrain's automatic module name, the torch classes it pairs with).
_KINDS = {
    "linear": ("Dense", ("Linear",)),
    "conv2d": ("Conv", ("Conv2d",)),
    "embedding": ("Embed", ("Embedding",)),
    "layer_norm": ("LayerNorm", ("LayerNorm",)),
    "rms_norm": ("RMSNorm", ("RMSNorm",)),
}
_NO_PARAMS = {"activation": "Activation", "pool": "Pool", "flatten": "Flatten",
              "dropout": "Dropout"}


def torch_module_map(model, spec):
    """{qtrain module: torch module name} pairing, in order, the spec's top-level layers that
    have parameters (linear, conv2d, embedding, layer_norm, rms_norm) with the torch modules
    that hold parameters directly — a torch.nn.Sequential of Linear / ReLU / Flatten / Conv2d
    layers and the spec that mirrors it, say. ValueError when the spec's body is not one flat
    sequential, or when the two lists differ in length or kind (then give module_map yourself).
    """
    body = json_format.MessageToDict(spec, preserving_proto_field_name=True).get("body", {})
    if "sequential" not in body or body.get("name"):
        raise ValueError("torch_module_map needs a spec whose body is an unnamed sequential; "
                         "give module_map yourself")
    ours, counters = [], {}
    for layer in body["sequential"].get("layers", []):
        kind = next((k for k in layer if k != "name"), None)
        if kind in _KINDS:
            auto, classes = _KINDS[kind]
        elif kind in _NO_PARAMS:
            auto, classes = _NO_PARAMS[kind], ()
        else:
            raise ValueError(f"torch_module_map: layer kind {kind!r} is not supported; give "
                             "module_map yourself")
        name = layer.get("name")
        if not name:
            name = f"{auto}_{counters.get(auto, 0)}"
            counters[auto] = counters.get(auto, 0) + 1
        if classes:
            ours.append((name, kind, classes))
    theirs = [(n, m) for n, m in model.named_modules()
              if n and any(True for _ in m.parameters(recurse=False))]
    if len(ours) != len(theirs):
        raise ValueError(f"torch_module_map: the spec has {len(ours)} layers with parameters "
                         f"({[o[0] for o in ours]}), the torch model {len(theirs)} "
                         f"({[t[0] for t in theirs]})")
    mapping = {}
    for (name, kind, classes), (torch_name, module) in zip(ours, theirs):
        if type(module).__name__ not in classes:
            raise ValueError(f"torch_module_map: {name} ({kind}) pairs with {torch_name} "
                             f"({type(module).__name__})")
        mapping[name] = torch_name
    return mapping
