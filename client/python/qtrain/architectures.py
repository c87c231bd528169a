"""Named architectures (the server's Architecture message): a torchvision model object is
recognised as the builder call that made it, so that its state dict imports without a module map.
No torch import: the object's class and attributes are read."""

# (block class, blocks per stage) -> torchvision builder.
_RESNETS = {
    ("BasicBlock", (2, 2, 2, 2)): "resnet18",
    ("BasicBlock", (3, 4, 6, 3)): "resnet34",
    ("Bottleneck", (3, 4, 6, 3)): "resnet50",
}
# torchvision's vit_* builders: (patch_size, num_layers, num_heads, hidden_dim, mlp_dim).
_VITS = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
}
_VIT_OPTIONS = ("patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")
_KNOWN = sorted(set(_RESNETS.values()) | {"mobilenet_v2"} | set(_VITS))


def _resnet(model):
    block = type(model.layer1[0]).__name__
    counts = tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    name = _RESNETS.get((block, counts))
    if name is None:
        raise ValueError(f"ResNet with {block} blocks {counts} is not resnet18, resnet34 or "
                         "resnet50")
    first = model.layer1[0]
    if block == "Bottleneck" and (first.conv2.groups != 1 or first.conv1.out_channels != 64):
        raise ValueError("ResNeXt and wide ResNets (groups / width_per_group) are not supported")
    return name, {"num_classes": model.fc.out_features}


def _mobilenet_v2(model):
    # width_mult is not stored: the last block's 320·width_mult channels give it (exact for the
    # published widths); the server checks every tensor's shape on import.
    options = {"num_classes": model.classifier[1].out_features}
    width = model.features[-2].conv[-1].num_features / 320
    if width != 1.0:
        options["width_mult"] = width
    if model.classifier[0].p != 0.2:
        options["dropout"] = model.classifier[0].p
    if len(model.features) != 19:
        raise ValueError("MobileNetV2 with a custom inverted_residual_setting is not supported")
    return "mobilenet_v2", options


def _vit(model):
    if type(model.conv_proj).__name__ != "Conv2d":
        raise ValueError("ViT with conv_stem_configs is not supported")
    if model.attention_dropout != 0:
        raise ValueError("ViT with attention_dropout is not supported")
    shape = (model.patch_size, len(model.encoder.layers),
             model.encoder.layers[0].self_attention.num_heads, model.hidden_dim, model.mlp_dim)
    name = next((n for n, s in _VITS.items() if s == shape), "vit_b_16")
    options = {"num_classes": model.num_classes}
    for key, value, default in zip(_VIT_OPTIONS, shape, _VITS[name]):
        if value != default:
            options[key] = value
    if model.image_size != 224:
        options["image_size"] = model.image_size
    if model.dropout != 0:
        options["dropout"] = model.dropout
    if model.representation_size:
        options["representation_size"] = model.representation_size
    return name, options


def torchvision_architecture(model, input_shape=None):
    """{"name", "options", "input_shape"} of a torchvision model object (resnet18, resnet34,
    resnet50, mobilenet_v2, vit_b_16 and the other VisionTransformer builders), as ImportWeights
    and CreateSession take it. `input_shape` is (H, W, C) of the images the session will see
    (default 224x224x3; a ViT's own image_size). ValueError naming what does not match."""
    kind = type(model).__name__
    if kind == "ResNet":
        name, options = _resnet(model)
    elif kind == "MobileNetV2":
        name, options = _mobilenet_v2(model)
    elif kind == "VisionTransformer":
        name, options = _vit(model)
        if input_shape is None:
            input_shape = (model.image_size, model.image_size, 3)
    else:
        raise ValueError(f"{kind} is not a torchvision architecture qtrain knows "
                         f"({', '.join(_KNOWN)}); give a model spec")
    shape = list(input_shape) if input_shape is not None else [224, 224, 3]
    return {"name": f"torchvision:{name}", "options": options, "input_shape": shape}
