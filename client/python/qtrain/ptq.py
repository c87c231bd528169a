"""The post-training quantization job in one call: import a float model trained elsewhere,
measure it, calibrate static scales, measure again, optionally pick mixed precision within an
accuracy budget, and export — the same steps as `qtrain ptq`.

    import qtrain
    with qtrain.Client() as c:
        result = qtrain.ptq(c, spec, torch_model, calibration=x_train[:2048],
                            evaluation=(x_test, y_test), out_dir="out")
        print(result.float_metrics.accuracy, result.ptq_metrics.accuracy)
"""

import dataclasses
import os

from qtrain.datasets import batches


@dataclasses.dataclass
class PtqResult:
    session_id: str
    float_metrics: object      # EvaluateResponse of the imported float model
    ptq_metrics: object        # EvaluateResponse under the PTQ rules
    rules: object              # the RuleSet the session ends with (mixed precision if chosen)
    sensitivity: object = None  # SensitivityReport, with a budget
    files: dict = dataclasses.field(default_factory=dict)  # format -> path


def _pairs(evaluation, batch_size):
    if isinstance(evaluation, tuple) and len(evaluation) == 2:
        return list(batches(evaluation[0], evaluation[1], batch_size=batch_size))
    return list(evaluation)


def _inputs(calibration, batch_size):
    if hasattr(calibration, "shape"):  # one array of examples
        return list(batches(calibration, None, batch_size=batch_size))
    return list(calibration)


def ptq(client, model, weights, calibration, evaluation, rules="srq-int8", session_id="",
        module_map=None, out_dir=None, formats=("compressed-tensors", "onnx"),
        max_accuracy_drop=0.0, max_loss_increase=0.0, qtypes=(), batch_size=256,
        on_progress=None):
    """Runs the PTQ job on `client`'s server and returns a PtqResult.

    `model`: the spec (dict, JSON or preset name); `weights`: the float weights as
    Client.import_weights takes them (a torch module, a dict of arrays, bytes or a path);
    `calibration`: an array of inputs or a list of input batches; `evaluation`: (inputs,
    labels) arrays or a list of such batches, held out from the calibration data. With a budget
    (`max_accuracy_drop`, `max_loss_increase`) the session's rules become the cheapest mixed
    precision over `qtypes` within it. `out_dir`: where each of `formats` is written
    (model.safetensors + config.json; model.onnx). `on_progress(stage, detail)` sees each stage.
    The session stays on the server for more work; delete it when done."""
    say = on_progress or (lambda stage, detail: None)
    held_out = _pairs(evaluation, batch_size)
    session = client.import_weights(session_id, model, weights, module_map=module_map)
    sid = session.session_id
    say("import", f"session {sid}: {session.parameters} parameters")
    float_metrics = client.evaluate(sid, held_out)
    say("float", float_metrics)
    client.update_rules(sid, rules)
    client.calibrate(sid, _inputs(calibration, batch_size))
    ptq_metrics = client.evaluate(sid, held_out)
    say("ptq", ptq_metrics)
    report = None
    if max_accuracy_drop > 0 or max_loss_increase > 0:
        report = client.analyze_sensitivity(
            sid, held_out, qtypes=qtypes, max_accuracy_drop=max_accuracy_drop,
            max_loss_increase=max_loss_increase,
            on_progress=lambda r: say("sensitivity", r) if r.evaluations else None)
        client.update_rules(sid, report.mixed_precision.rules)
        say("mixed precision", report.mixed_precision)
    files = {}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        for fmt in formats:
            if fmt == "onnx":
                files[fmt] = os.path.join(out_dir, "model.onnx")
                client.export_onnx(sid, files[fmt])
            else:
                client.export_quantized(sid, out_dir, module_map=module_map, format=fmt)
                files[fmt] = os.path.join(out_dir, "model.safetensors")
            say("export", files[fmt])
    return PtqResult(sid, float_metrics, ptq_metrics, client.get_session(sid).rules, report,
                     files)
