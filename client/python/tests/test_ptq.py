"""The whole PTQ job on a model made elsewhere: a Fashion-MNIST MLP trained in PyTorch is
imported, measured, calibrated, analysed for sensitivity (mixed precision within a budget) and
exported to compressed-tensors and ONNX; ONNX Runtime (onnxruntime-node, tests/onnx) runs the
ONNX model and gives the server's SRQ outputs within the quantization's error. Also a CNN's
ONNX export (convolutions, pooling, per-tensor weight scales) and the `qtrain ptq` command."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import onnx.numpy_helper

import torch

import qtrain
from tests_server import Server  # noqa: E402  (same folder)
from torch_models import CNN_SPEC, SPEC, nchw, trained_torch_cnn, trained_torch_mlp

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ORT_DIR = os.path.join(ROOT, "tests", "onnx")
BUILD = os.environ.get("QTRAIN_BUILD_DIR", os.path.join(ROOT, "build"))


def ensure_onnxruntime():
    """onnxruntime-node from the lock file (the npm registry), once; its CPU library is bundled,
    so the GPU download is skipped."""
    if os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ORT_DIR,
                   env=env, check=True)


def run_onnx(model_path, x):
    """The ONNX model's output for `x`, computed by ONNX Runtime."""
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
        np.ascontiguousarray(x).tofile(src)
        dtype = "int32" if x.dtype == np.int32 else "float32"
        out = subprocess.run(["node", os.path.join(ORT_DIR, "run_onnx.js"), model_path, src, dtype,
                              ",".join(map(str, x.shape)), dst],
                             check=True, capture_output=True, text=True).stdout
        shape = json.loads(out)["shape"]
        return np.fromfile(dst, dtype=np.float32).reshape(shape)


def step_bound(client, session_id, head_kernel):
    """What one quantization step of the last layer's input can move a logit: the ONNX graph
    and the server may round a value that sits on a rounding boundary differently (x / s versus
    x * (1 / s)), so a few inputs of the last layer may land one step apart."""
    stats = {(s.module_path, s.name): s for s in client.quant_stats(session_id).stats}
    scale = qtrain.from_tensor(stats[("head", "dot_general0_lhs")].scale).item()
    return 2 * scale * float(np.max(np.sum(np.abs(head_kernel), axis=0)))


def entropy_threshold(hist, r, levels=128):
    """numerics.md §9 step 3, written from the contract: the KL search over a copy of the
    histogram whose bin 0 holds bin 1's count; A = float32(i·R / bins)."""
    hist = hist.copy()
    hist[0] = hist[1]
    bins = len(hist)

    def smooth(d):
        d = d / d.sum()
        zeros = d == 0
        nz = len(d) - zeros.sum()
        if nz == 0:
            return None
        d = np.where(zeros, 1e-4, d - 1e-4 * zeros.sum() / nz)
        return None if np.any(d <= 0) else d

    best, best_i = np.inf, None
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        starts = np.arange(levels) * i // levels
        sizes = np.diff(np.append(starts, i))
        nonzero = hist[:i] != 0
        totals = np.add.reduceat(hist[:i], starts)
        counts = np.add.reduceat(nonzero.astype(np.int64), starts)
        each = np.divide(totals, counts, out=np.zeros(levels), where=counts > 0)
        q = np.where(nonzero, np.repeat(each, sizes), 0.0)
        p, q = smooth(p), smooth(q)
        if p is None or q is None:
            continue
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best:
            best, best_i = kl, i
    return r if best_i is None else np.float32(best_i * np.float64(r) / bins)


class PtqTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_onnxruntime()
        cls.server = Server()
        cls.client = qtrain.Client(cls.server.address)
        cls.model = trained_torch_mlp()
        x, _ = qtrain.load_fashion_mnist("train", limit=2048)
        cls.calibration = x
        cls.xt, cls.yt = qtrain.load_fashion_mnist("t10k", limit=2000)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_ptq_job_with_mixed_precision_and_both_exports(self):
        stages = []
        with tempfile.TemporaryDirectory() as d:
            r = qtrain.ptq(self.client, SPEC, self.model, self.calibration, (self.xt, self.yt),
                           rules="srq-int8", session_id="ptq", out_dir=d,
                           max_accuracy_drop=0.005, qtypes=("int2", "int8"),
                           on_progress=lambda stage, detail: stages.append(stage))
            self.assertEqual(r.session_id, "ptq")
            self.assertEqual(r.float_metrics.examples, 2000)
            # int8 SRQ stays within a point of the float model.
            self.assertGreater(r.ptq_metrics.accuracy, r.float_metrics.accuracy - 0.01)
            mp = r.sensitivity.mixed_precision
            self.assertTrue(mp.within_budget)
            self.assertEqual(len(r.sensitivity.ops), 2)
            self.assertEqual({op.qtype for op in r.sensitivity.ops}, {"int2"})
            # int2 everywhere misses the budget: the search raised something.
            self.assertLess(r.sensitivity.quantized.accuracy, r.float_metrics.accuracy - 0.005)
            chosen = {c.module_path: c.qtype for c in mp.choices}
            self.assertEqual(r.rules, mp.rules)
            # The mixed rules are what the session runs now: Evaluate agrees with the report.
            now = self.client.evaluate("ptq", list(qtrain.batches(self.xt, self.yt, 256)))
            self.assertAlmostEqual(now.accuracy, mp.metrics.accuracy, places=12)
            self.assertGreaterEqual(now.accuracy, r.float_metrics.accuracy - 0.005 - 1e-12)
            for stage in ("import", "float", "ptq", "sensitivity", "mixed precision", "export"):
                self.assertIn(stage, stages)
            self.assertTrue(os.path.exists(os.path.join(d, "config.json")))
            with open(r.files["compressed-tensors"], "rb") as f:
                arrays, _ = qtrain.load_safetensors(f.read())
            # compressed-tensors holds int8 layers; others stay float there (listed in ignore).
            for module, name in (("Dense_0", "Dense_0"), ("head", "head")):
                want = np.int8 if chosen[module] == "int8" else np.float32
                self.assertEqual(arrays[f"{name}.weight"].dtype, want, chosen)
            self.check_onnx_matches_server("ptq", r.files["onnx"])
        self.client.delete_session("ptq")

    def check_onnx_matches_server(self, session_id, path):
        got = run_onnx(path, self.xt)
        want = self.client.forward(session_id, self.xt)
        self.assertEqual(got.shape, want.shape)
        state, _ = qtrain.load_safetensors(self.client.download_checkpoint(session_id))
        diff = np.abs(got - want)
        bound = np.maximum(1e-4 * (1 + np.abs(want)),
                           step_bound(self.client, session_id, state["params/head/kernel"]))
        self.assertTrue(np.all(diff <= bound), f"max |ORT - server| = {diff.max()}")
        agree = float(np.mean(np.argmax(got, 1) == np.argmax(want, 1)))
        self.assertGreaterEqual(agree, 0.999)
        return diff

    def test_onnx_of_a_cnn_matches_the_server(self):
        spec = {"input": {"shape": [28, 28, 1]}, "body": {"sequential": {"layers": [
            {"conv2d": {"features": 8, "kernel_size": [3, 3]}},
            {"activation": {"kind": "GELU"}},
            {"pool": {"kind": "MAX", "window": [2, 2]}},
            {"conv2d": {"features": 8, "kernel_size": [3, 3], "strides": [2, 2],
                        "padding": "VALID"}},
            {"activation": {"kind": "SILU"}},
            {"pool": {"kind": "AVG", "window": [3, 3], "strides": [2, 2], "padding": "SAME"}},
            {"flatten": {}},
            {"layer_norm": {}},
            {"residual": {"body": {"sequential": {"layers": [
                {"linear": {"features": 72}}, {"activation": {"kind": "TANH"}}]}}}},
            {"rms_norm": {}},
            {"dropout": {"rate": 0.1}},
            {"name": "head", "linear": {"features": 10}}]}}}
        # Static int8 everywhere, per-tensor weights on the convolutions.
        self.train_calibrate_and_check_onnx("cnn", spec, {"rules": [
            {"module_path": "Conv_.*", "weight_qtype": "int8", "act_qtype": "int8",
             "act_static_scale": True, "disable_channelwise_axes": True},
            {"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]})
        # Dynamic activation scales have no QDQ form: without act_static_scale the export keeps
        # activations float, so ORT is then close to the float model, not the server.

    def test_onnx_of_torch_activations_matches_the_server(self):
        # ReLU6 (Clip), HardSwish, Sigmoid and the exact GELU (Erf) in ONNX Runtime.
        layers = [{"flatten": {}}]
        for kind in ("RELU6", "HARD_SWISH", "SIGMOID", "GELU_EXACT"):
            layers += [{"linear": {"features": 32}}, {"activation": {"kind": kind}}]
        spec = {"input": {"shape": [28, 28, 1]}, "body": {"sequential": {
            "layers": layers + [{"name": "head", "linear": {"features": 10}}]}}}
        self.train_calibrate_and_check_onnx("acts", spec, "srq-int8")

    def train_calibrate_and_check_onnx(self, session, spec, rules):
        """Trains `spec` a little, calibrates it under `rules`, and checks that ONNX Runtime
        gives the server's outputs from its export."""
        x, y = qtrain.load_fashion_mnist("train", limit=1024)
        c = self.client
        c.create_session(session, model=spec, optimizer="adamw")
        for _ in c.train(session, qtrain.batches(x, y, batch_size=64)):
            pass
        c.update_rules(session, rules)
        c.calibrate(session, qtrain.batches(x[:512], None, batch_size=128))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, f"{session}.onnx")
            c.export_onnx(session, path)
            self.check_onnx_matches_server(session, path)
        c.delete_session(session)

    def test_onnx_of_a_transformer_matches_the_server(self):
        # Tokens in; causal attention with quantized einsums; per-token static scales on the
        # linear layers (the default act_batch_axes) become per-axis QDQ.
        spec = {"input": {"kind": "TOKENS", "shape": [16]}, "body": {"sequential": {"layers": [
            {"embedding": {"num_embeddings": 32, "features": 16}},
            {"residual": {"body": {"sequential": {"layers": [
                {"layer_norm": {}}, {"attention": {"num_heads": 2, "causal": True}}]}}}},
            {"residual": {"body": {"sequential": {"layers": [
                {"rms_norm": {}}, {"linear": {"features": 32}}, {"activation": {"kind": "GELU"}},
                {"linear": {"features": 16}}]}}}},
            {"name": "head", "linear": {"features": 32}}]}}}
        rng = np.random.default_rng(0)
        x = rng.integers(0, 32, size=(512, 16)).astype(np.int32)
        y = np.roll(x, 1, axis=1)  # the previous token
        c = self.client
        c.create_session("lm", model=spec, optimizer="adamw")
        for _ in c.train("lm", qtrain.batches(x, y, batch_size=32, epochs=2)):
            pass
        # Per-(head, token) static scales of the einsums have no QuantizeLinear form: named.
        c.create_session("lm-per-head", model=spec, rules="srq-int8")
        c.calibrate("lm-per-head", qtrain.batches(x[:64], None, batch_size=64))
        with self.assertRaises(qtrain.QtrainError) as e:
            c.export_onnx("lm-per-head")
        self.assertIn("MultiHeadAttention_0 einsum0_lhs: static scales vary over more than one axis",
                      e.exception.message)
        c.delete_session("lm-per-head")
        c.update_rules("lm", {"rules": [
            {"op_names": ["einsum"], "weight_qtype": "int8", "act_qtype": "int8",
             "act_static_scale": True, "act_batch_axes": {"axes": [0, 1, 2, 3]}},
            {"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]})
        c.calibrate("lm", qtrain.batches(x[:256], None, batch_size=64))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "lm.onnx")
            c.export_onnx("lm", path)
            got, want = run_onnx(path, x[:200]), c.forward("lm", x[:200])
        self.assertEqual(got.shape, (200, 16, 32))
        diff = np.abs(got - want)
        self.assertGreater(float(np.mean(diff < 1e-3)), 0.98, f"max diff {diff.max()}")
        self.assertGreaterEqual(float(np.mean(got.argmax(-1) == want.argmax(-1))), 0.99)
        c.delete_session("lm")

    def test_onnx_export_errors_name_the_layer(self):
        c = self.client
        c.import_weights("uncal", SPEC, self.model)
        c.update_rules("uncal", "srq-int8")
        with self.assertRaises(qtrain.QtrainError) as e:
            c.export_onnx("uncal")
        self.assertIn("Dense_0: no activation statistics yet", e.exception.message)
        c.delete_session("uncal")

    def test_cnn_calibrators_and_its_onnx_flattens_as_pytorch(self):
        # A ReLU CNN with nn.Flatten, trained in PyTorch: every calibrator quantizes it, and
        # entropy's thresholds are the §9 search (bin 0 read as bin 1) of a reference written
        # here from the contract, over the histograms the server kept.
        model = trained_torch_cnn(epochs=4)
        c = self.client
        with torch.no_grad():
            float_accuracy = float(np.mean(model(nchw(self.xt)).numpy().argmax(1) == self.yt))
        for method in ("absmax", "percentile,99.99", "mse", "entropy"):
            c.import_weights("cnn", CNN_SPEC, model)
            c.update_rules("cnn", {"rules": [{
                "weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True,
                "act_calibration_method": method}]})
            c.calibrate("cnn", qtrain.batches(self.calibration, None, batch_size=128))
            accuracy = float(np.mean(c.forward("cnn", self.xt).argmax(1) == self.yt))
            if method != "entropy":  # entropy's KL search can clip hard: docs/calibration.md
                self.assertGreater(accuracy, float_accuracy - 0.01, method)
                c.delete_session("cnn")
        state, _ = qtrain.load_safetensors(c.download_checkpoint("cnn"))
        scales = {s.module_path: qtrain.from_tensor(s.scale).item()
                  for s in c.quant_stats("cnn").stats}
        for module, stat in (("Conv_1", "conv_general_dilated0_lhs"),
                             ("head", "dot_general0_lhs")):
            prefix = f"quant_stats/{module}/{stat}/"
            want = entropy_threshold(state[prefix + "entropy_hist"].astype(np.float64),
                                     state[prefix + "entropy_range"].item())
            # s = A / B with B = 127.5 for int8 (numerics.md §3).
            self.assertEqual(np.float32(scales[module]), np.float32(want) / np.float32(127.5))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "cnn.onnx")
            c.export_onnx("cnn", path)
            self.check_onnx_matches_server("cnn", path)
            graph = onnx.load(path).graph
        # The graph flattens NCHW maps as nn.Flatten does, so the head's int8 weights are
        # PyTorch's, (in, out) in (c, h, w) order, within half a step.
        init = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        q, scale = init["head/kernel_quantized"], init["head/kernel_scale"]
        w = model.state_dict()["7.weight"].numpy().T
        self.assertLessEqual(float(np.max(np.abs(q * scale - w) - scale / 2)), 1e-7)
        self.assertIn("Transpose", [n.op_type for n in graph.node])
        c.delete_session("cnn")

    def cli_ptq(self, d, session, *flags, json_out=True):
        """`qtrain ptq` of the MLP (weights and spec written into `d`)."""
        weights = os.path.join(d, "mlp.safetensors")
        if not os.path.exists(weights):
            state = {k: v.numpy() for k, v in self.model.state_dict().items()}
            with open(weights, "wb") as f:
                f.write(qtrain.save_safetensors(state))
            with open(os.path.join(d, "spec.json"), "w") as f:
                json.dump(SPEC, f)
        return subprocess.run(
            [os.path.join(BUILD, "bin", "qtrain"), "ptq", session,
             f"--model={os.path.join(d, 'spec.json')}", f"--weights={weights}",
             '--map={"Dense_0": "1", "head": "3"}', "--data=/usr/share/datasets/fashion-mnist",
             "--calibration_batches=8", "--limit=2000", f"--server={self.server.address}",
             *flags, *(["--json"] if json_out else [])], capture_output=True, text=True)

    def sessions(self):
        return [s.session_id for s in self.client.list_sessions()]

    def test_qtrain_ptq_command(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out")
            run = self.cli_ptq(d, "cli-ptq", "--rules=srq-int8", f"--out={out}")
            self.assertEqual(run.returncode, 0, run.stderr)
            j = json.loads(run.stdout)
            self.assertEqual(j["session_id"], "cli-ptq")
            self.assertGreater(j["ptq"]["accuracy"], j["float"]["accuracy"] - 0.01)
            for name in ("model.safetensors", "config.json", "model.onnx"):
                self.assertTrue(os.path.exists(os.path.join(out, name)), name)
            self.check_onnx_matches_server("cli-ptq", os.path.join(out, "model.onnx"))
        self.client.delete_session("cli-ptq")

    def test_qtrain_ptq_checks_its_output_first(self):
        with tempfile.TemporaryDirectory() as d:
            run = self.cli_ptq(d, "cli-ptq-out", f"--out={d}/missing/x")
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn(f"--out={d}/missing/x: cannot create it in {d}/missing", run.stderr)
            self.assertNotIn("cli-ptq-out", self.sessions())
            with open(os.path.join(d, "file"), "w") as f:
                f.write("not a directory")
            run = self.cli_ptq(d, "cli-ptq-out", f"--out={d}/file")
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn("not a directory", run.stderr)
            self.assertNotIn("cli-ptq-out", self.sessions())

    def test_qtrain_ptq_reports_what_it_measured_and_deletes_its_session_on_failure(self):
        with tempfile.TemporaryDirectory() as d:
            # Fails at the rules, after the float evaluation.
            entropy_weights = json.dumps({"rules": [
                {"weight_qtype": "int8", "weight_calibration_method": "entropy"}]})
            run = self.cli_ptq(d, "cli-ptq-fail", f"--rules={entropy_weights}",
                               f"--out={d}/out")
            self.assertEqual(run.returncode, 6, run.stderr)
            j = json.loads(run.stdout)
            self.assertEqual(j["error"]["code"], "INVALID_ARGUMENT")
            self.assertIn("ptq: rules", j["error"]["message"])
            self.assertEqual(j["float"]["examples"], 2000)
            self.assertNotIn("ptq", j)
            self.assertTrue(j["session_deleted"])
            self.assertNotIn("cli-ptq-fail", self.sessions())
            # Fails at the export (int4 activations are not exported), after both evaluations:
            # the table shows both, the custom rules labelled briefly.
            int4_acts = json.dumps({"rules": [{"weight_qtype": "int8", "act_qtype": "int4",
                                               "act_static_scale": True}]})
            run = self.cli_ptq(d, "cli-ptq-fail", f"--rules={int4_acts}", f"--out={d}/out",
                               "--exports=compressed-tensors", json_out=False)
            self.assertEqual(run.returncode, 6, run.stderr)
            self.assertIn("measured before the failure", run.stdout)
            self.assertIn("float (imported)", run.stdout)
            self.assertIn("ptq (rules from --rules)", run.stdout)
            self.assertNotIn("{", run.stdout)
            self.assertIn("deleted session cli-ptq-fail", run.stdout)
            self.assertIn("activations in int4 are not exported", run.stderr)
            self.assertNotIn("cli-ptq-fail", self.sessions())


if __name__ == "__main__":
    unittest.main()
