"""Ready-made configurations as dicts in the JSON form of qtrain.v1.ModelSpec / RuleSet /
OptimizerConfig: the CLI's `mlp` model preset and its `float`, `qat-int8`, `qt-int8` and
`srq-int8` rule presets, and its default optimizer (AdamW, learning rate 1e-3)."""

MLP = {
    "input": {"shape": [28, 28, 1]},
    "body": {"sequential": {"layers": [
        {"flatten": {}},
        {"linear": {"features": 256}},
        {"activation": {"kind": "RELU"}},
        {"name": "head", "linear": {"features": 10}},
    ]}},
}

FLOAT = {"rules": []}
QAT_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]}
QT_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "bwd_qtype": "int8"}]}
SRQ_INT8 = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]}

ADAMW = {"adamw": {}, "schedule": {"learning_rate": 1e-3}}
