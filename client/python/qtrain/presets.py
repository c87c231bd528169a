"""Ready-made configurations as dicts in the JSON form of qtrain.v1.ModelSpec / RuleSet /
OptimizerConfig, the same as the CLI's presets: models `mlp`, `cnn`, `transformer-lm`; rules
`float`, `qat-int8`, `qt-int8`, `srq-int8`, `qat-int4` and for language models `w8a8`, `8da4w`,
`w4a16`; optimizers `adamw`, `sgd`, `momentum`
(learning rate 1e-3). Client methods also take these names as strings ("qat-int8")."""

import copy


def mlp(classes=10, input_shape=(28, 28, 1)):
    """flatten -> 256 ReLU -> `head`."""
    return {
        "input": {"shape": list(input_shape)},
        "body": {"sequential": {"layers": [
            {"flatten": {}},
            {"linear": {"features": 256}},
            {"activation": {"kind": "RELU"}},
            {"name": "head", "linear": {"features": classes}},
        ]}},
    }


def cnn(classes=10, input_shape=(28, 28, 1)):
    """Two 3x3 conv + ReLU + 2x2 max-pool blocks (16, 32 channels) -> `head`."""
    block = lambda features: [  # noqa: E731
        {"conv2d": {"features": features, "kernel_size": [3, 3]}},
        {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "MAX", "window": [2, 2]}},
    ]
    return {
        "input": {"shape": list(input_shape)},
        "body": {"sequential": {"layers": block(16) + block(32) + [
            {"flatten": {}},
            {"name": "head", "linear": {"features": classes}},
        ]}},
    }


def transformer_lm(seq_len=64):
    """Byte tokens (vocabulary 256), width 128, two pre-norm blocks of 4-head causal attention
    and a 512-wide GELU MLP, softmax cross entropy per token."""
    layers = [{"embedding": {"num_embeddings": 256, "features": 128}}]
    for i in range(2):
        layers.append({"name": f"attn_{i}", "residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 4, "causal": True}}]}}}})
        layers.append({"name": f"mlp_{i}", "residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}}, {"linear": {"features": 512}}, {"activation": {"kind": "GELU"}},
            {"linear": {"features": 128}}]}}}})
    layers += [{"layer_norm": {}}, {"name": "head", "linear": {"features": 256}}]
    return {"input": {"kind": "TOKENS", "shape": [seq_len]},
            "body": {"sequential": {"layers": layers}},
            "loss": {"kind": "SOFTMAX_CROSS_ENTROPY"}}


MLP = mlp()
CNN = cnn()
TRANSFORMER_LM = transformer_lm()

FLOAT = {"rules": []}
QAT_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]}
QT_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "bwd_qtype": "int8"}]}
SRQ_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]}
QAT_INT4 = {"rules": [{"weight_qtype": "int4", "act_qtype": "int8"}]}
# Language models: the linear layers only (the attention einsums and lm_head stay float).
_LM_HEAD_FLOAT = {"module_path": "lm_head"}
W8A8 = {"rules": [_LM_HEAD_FLOAT, {"op_names": ["dot_general"], "weight_qtype": "int8",
                                   "act_qtype": "int8"}]}
W8DA4W = {"rules": [_LM_HEAD_FLOAT, {"op_names": ["dot_general"], "weight_qtype": "int4",
                                     "act_qtype": "int8", "tile_size": 32,
                                     "tile_weights_only": True}]}
W4A16 = {"rules": [_LM_HEAD_FLOAT, {"op_names": ["dot_general"], "weight_qtype": "int4",
                                    "tile_size": 128}]}

ADAMW = {"adamw": {}, "schedule": {"learning_rate": 1e-3}}
SGD = {"sgd": {}, "schedule": {"learning_rate": 1e-3}}
MOMENTUM = {"sgd": {"momentum": 0.9}, "schedule": {"learning_rate": 1e-3}}

MODELS = {"mlp": MLP, "cnn": CNN, "transformer-lm": TRANSFORMER_LM}
RULES = {"float": FLOAT, "qat-int8": QAT_INT8, "qt-int8": QT_INT8, "srq-int8": SRQ_INT8,
         "qat-int4": QAT_INT4, "w8a8": W8A8, "8da4w": W8DA4W, "w4a16": W4A16}
OPTIMIZERS = {"adamw": ADAMW, "sgd": SGD, "momentum": MOMENTUM}


def lookup(kind, name):
    """The preset `name` of `kind` ("models", "rules", "optimizers") as a fresh dict; ValueError
    listing the known names otherwise."""
    table = {"models": MODELS, "rules": RULES, "optimizers": OPTIMIZERS}[kind]
    if name not in table:
        raise ValueError(f"{name!r} is not JSON nor one of the {kind[:-1]} presets: "
                         f"{', '.join(table)}")
    return copy.deepcopy(table[name])
