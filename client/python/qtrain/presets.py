"""Ready-made model specs and rule sets (the same as the `qtrain` CLI's presets), as dicts in the
JSON form of qtrain.v1.ModelSpec / RuleSet."""

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
