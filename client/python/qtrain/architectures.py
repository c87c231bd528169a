"""Named architectures (the server's Architecture message): a torchvision model object is
recognised as the builder call that made it, so that its state dict imports without a module map.
No torch import: the object's class and attributes are read."""

# (block class, blocks per stage) -> torchvision builder.
_RESNETS = {
    ("BasicBlock", (2, 2, 2, 2)): "resnet18",
    ("BasicBlock", (3, 4, 6, 3)): "resnet34",
    ("Bottleneck", (3, 4, 6, 3)): "resnet50",
}
_KNOWN = sorted(set(_RESNETS.values()) | {"mobilenet_v2"})


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


def torchvision_architecture(model, input_shape=None):
    """{"name", "options", "input_shape"} of a torchvision model object (resnet18, resnet34,
    resnet50, mobilenet_v2), as ImportWeights and CreateSession take it. `input_shape` is
    (H, W, C) of the images the session will see (default 224x224x3). ValueError naming what
    does not match."""
    kind = type(model).__name__
    if kind == "ResNet":
        name, options = _resnet(model)
    elif kind == "MobileNetV2":
        name, options = _mobilenet_v2(model)
    else:
        raise ValueError(f"{kind} is not a torchvision architecture qtrain knows "
                         f"({', '.join(_KNOWN)}); give a model spec")
    shape = list(input_shape) if input_shape is not None else [224, 224, 3]
    return {"name": f"torchvision:{name}", "options": options, "input_shape": shape}
