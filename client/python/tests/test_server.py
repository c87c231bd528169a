"""The Python package against the real qtrain-server: sessions, the training iterator, rules
switched between steps, evaluation, calibration, quant stats, Forward checked against numpy,
checkpoints as arrays, errors, health, reflection and the example script."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np

import qtrain
from qtrain.grpc_protos import health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc
from tests_server import BUILD_DIR, Server, make_certificates  # noqa: E402  (same folder)

QTRAIN_CLI = os.path.join(BUILD_DIR, "bin", "qtrain")
MLP = "mlp"
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "finetune_fashion_mnist.py")


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = qtrain.Client(cls.server.address)
        cls.x, cls.y = qtrain.load_fashion_mnist("train", limit=2560)
        cls.xt, cls.yt = qtrain.load_fashion_mnist("t10k", limit=1000)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_server_info_names_the_isa_and_exact_int8_kernels(self):
        info = self.client.server_info()
        self.assertIn(info.active_isa, ("baseline", "avx2", "avx2_vnni", "avx512", "avx512_vnni", "amx"))
        self.assertEqual(len(info.int8_kernels), 5)  # 3 matmuls, a conv, a depthwise conv
        for k in info.int8_kernels:
            first = next(c for c in k.candidates if c.supported)
            self.assertEqual(k.chosen, first.name)
            self.assertTrue(k.chosen.startswith("exact_") or k.chosen == "reference"
                            or "vnni" in k.chosen or "amx" in k.chosen, k.chosen)

    def test_health_and_reflection(self):
        self.assertEqual(self.client.health(), "SERVING")
        channel = grpc.insecure_channel(self.server.address)
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="qtrain.v1.Trainer")]
        responses = list(stub.ServerReflectionInfo(iter(reqs)))
        services = {s.name for s in responses[0].list_services_response.service}
        self.assertIn("qtrain.v1.Trainer", services)
        self.assertIn("grpc.health.v1.Health", services)
        self.assertTrue(responses[1].file_descriptor_response.file_descriptor_proto)
        # health Watch streams the current status first.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        watch.cancel()
        channel.close()

    def test_float_qat_qt_lifecycle(self):
        c = self.client
        s = c.create_session("py-life", model=qtrain.presets.MLP, optimizer=qtrain.presets.ADAMW,
                             seed=3)
        self.assertEqual(s.parameters, 784 * 256 + 256 + 256 * 10 + 10)
        steps = [r.step for r in c.train("py-life", qtrain.batches(self.x, self.y, 128, epochs=2,
                                                                     shuffle=True))]
        self.assertEqual(steps, list(range(1, 41)))
        float_acc = c.evaluate("py-life", qtrain.batches(self.xt, self.yt, 250)).accuracy
        self.assertGreater(float_acc, 0.6)

        for rules in (qtrain.presets.QAT_INT8, qtrain.presets.QT_INT8):
            s = c.update_rules("py-life", rules)
            self.assertTrue(all(op.rule_index == 0 for op in s.ops))
            last = list(c.train("py-life", qtrain.batches(self.x, self.y, 128)))[-1]
            self.assertTrue(np.isfinite(last.loss))
        ev = c.evaluate("py-life", qtrain.batches(self.xt, self.yt, 250))
        self.assertEqual(ev.examples, 1000)
        self.assertGreater(ev.accuracy, float_acc - 0.1)

        c.update_rules("py-life", qtrain.presets.SRQ_INT8)
        progress = []
        stats = c.calibrate("py-life", qtrain.batches(self.x[:640], batch_size=128),
                            on_progress=lambda b, e: progress.append((b, e)))
        self.assertEqual(progress[-1], (5, 640))
        rows = qtrain.Client.stats_rows(stats)
        self.assertEqual({r["module_path"] for r in rows}, {"Dense_0", "head"})
        for r in rows:
            self.assertEqual(r["count"], 5)
            self.assertEqual(r["qtype"], "int8")
            # Derived scale = mean absmax / 127.5 (symmetric int8, numerics.md).
            np.testing.assert_allclose(r["scale"], r["sum_of_absmax"] / 5 / 127.5, rtol=1e-6)
        self.assertEqual(qtrain.Client.stats_rows(c.quant_stats("py-life"))[0]["count"], 5)
        c.delete_session("py-life")

    def test_forward_matches_numpy_on_the_downloaded_weights(self):
        c = self.client
        c.create_session("py-np", model=qtrain.presets.MLP, seed=5)
        list(c.train("py-np", qtrain.batches(self.x, self.y, 256)))
        arrays, meta = c.checkpoint_arrays("py-np")
        self.assertEqual(meta["step"], "10")
        p = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
        x = self.xt[:64]
        h = np.maximum(x.reshape(64, -1) @ p["Dense_0/kernel"] + p["Dense_0/bias"], 0)
        want = h @ p["head/kernel"] + p["head/bias"]
        got = c.forward("py-np", x)
        self.assertEqual(got.shape, (64, 10))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

        # The same checkpoint into a new session gives the same outputs, bit for bit.
        info = c.upload_checkpoint("py-np-copy", c.download_checkpoint("py-np"))
        self.assertEqual(info.step, 10)
        np.testing.assert_array_equal(c.forward("py-np-copy", x), got)
        c.delete_session("py-np")
        c.delete_session("py-np-copy")

    def test_a_session_on_the_reference_backend_trains_as_the_default_one(self):
        c = self.client
        names = [b.name for b in c.server_info().backends]
        self.assertEqual(names[:2], ["onednn", "reference"])
        outputs = []
        for sid, backend in (("py-be-default", ""), ("py-be-ref", "reference")):
            s = c.create_session(sid, model=qtrain.presets.MLP, seed=5, backend=backend)
            self.assertEqual(s.backend, backend or "onednn")
            list(c.train(sid, qtrain.batches(self.x[:64], self.y[:64], 32)))
            outputs.append(c.forward(sid, self.xt[:16]))
            c.delete_session(sid)
        np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
        with self.assertRaisesRegex(qtrain.QtrainError, 'backend "tpu" is not one of'):
            c.create_session("py-be-bad", model=qtrain.presets.MLP, backend="tpu")

    def test_uint8_images_with_a_scale_train_exactly_as_float32(self):
        # The server computes pixel * scale in float32: the same bits a client sending float32
        # computes, in a quarter of the bytes. Same seed, same steps: the same losses and outputs.
        c = self.client
        x8, y = qtrain.load_fashion_mnist("train", limit=1024, dtype=np.uint8)
        scale = np.float32(1 / 255)
        x32 = x8.astype(np.float32) * scale
        for sid in ("py-u8", "py-f32"):
            c.create_session(sid, model=qtrain.presets.MLP, seed=3)
        u8 = [r.loss for r in c.train("py-u8", qtrain.batches(x8, y, 128), input_scale=scale)]
        f32 = [r.loss for r in c.train("py-f32", qtrain.batches(x32, y, 128))]
        self.assertEqual(u8, f32)
        np.testing.assert_array_equal(c.forward("py-u8", x8[:32], input_scale=scale),
                                      c.forward("py-f32", x32[:32]))
        # float16 inputs are widened exactly; a scale on labels is refused by name.
        np.testing.assert_array_equal(c.forward("py-f32", x32[:8].astype(np.float16)),
                                      c.forward("py-f32", x32[:8].astype(np.float16).astype(np.float32)))
        with self.assertRaises(qtrain.QtrainError) as e:
            c.forward("py-f32", x8[:4], input_scale=[1.0, 2.0])
        self.assertIn("inputs.scale has 2 values", e.exception.message)
        for sid in ("py-u8", "py-f32"):
            c.delete_session(sid)

    def test_errors_carry_the_code_and_leave_the_session_usable(self):
        c = self.client
        with self.assertRaises(qtrain.QtrainError) as e:
            c.get_session("py-missing")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("py-missing", e.exception.message)

        c.create_session("py-err", model=qtrain.presets.MLP)
        with self.assertRaises(qtrain.QtrainError) as e:
            list(c.train("py-err", [(np.zeros((4, 10), np.float32), np.zeros(4, np.int32))]))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(qtrain.QtrainError) as e:
            c.update_rules("py-err", {"rules": [{"module_path": "(", "weight_qtype": "int8"}]})
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(qtrain.QtrainError) as e:
            c.upload_checkpoint("py-err-2", b"not a checkpoint")
        # A local mistake inside the batch iterator surfaces as itself, not as a CANCELLED call.
        with self.assertRaisesRegex(ValueError, "int32"):
            list(c.train("py-err", [(self.x[:4], np.array([2**40] * 4))]))
        with self.assertRaisesRegex(ValueError, "no wire type"):
            c.evaluate("py-err", [(self.x[:4].astype(np.complex64), self.y[:4])])
        with self.assertRaisesRegex(qtrain.QtrainError, "no batches") as e:
            c.evaluate("py-err", [])
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaisesRegex(ValueError, "RuleSet"):
            c.update_rules("py-err", {"rules": [{"no_such_field": 1}]})
        # A data-parallel session needs a server with peers (docs/scaling.md): refused by name.
        with self.assertRaisesRegex(qtrain.QtrainError, "data_parallel.world_size 2") as e:
            c.create_session("py-dp", model=qtrain.presets.MLP, world_size=2)
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(c.get_session("py-err").step, 0)
        self.assertEqual(len(list(c.train("py-err", qtrain.batches(self.x[:256], self.y[:256],
                                                                   128)))), 2)
        c.delete_session("py-err")

    def test_presets_match_the_cli_and_go_by_name(self):
        """The Python presets build the same models as the CLI's, and names work for configs."""
        c = self.client
        cli = os.path.join(os.environ["QTRAIN_BUILD_DIR"], "bin", "qtrain")
        for name in ("mlp", "cnn", "transformer-lm"):
            out = subprocess.run([cli, "--server", self.server.address, "--json", "session",
                                  "create", f"py-cli-{name}", f"--preset={name}"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
            s = c.create_session(f"py-preset-{name}", model=name, rules="qat-int4",
                                 optimizer="momentum")
            self.assertEqual(s.parameters, c.get_session(f"py-cli-{name}").parameters, name)
            self.assertEqual(s.rules.rules[0].weight_qtype, "int4")
            if name == "mlp":  # the same default seed as the CLI: the same initial weights
                c.create_session("py-default-mlp", model="mlp")
                a, _ = c.checkpoint_arrays("py-default-mlp")
                b, _ = c.checkpoint_arrays("py-cli-mlp")
                np.testing.assert_array_equal(a["params/Dense_0/kernel"], b["params/Dense_0/kernel"])
                c.delete_session("py-default-mlp")
            for sid in (f"py-cli-{name}", f"py-preset-{name}"):
                c.delete_session(sid)
        with self.assertRaisesRegex(ValueError, "qat-int8"):
            c.create_session("py-bad-preset", model="mlp", rules="qat-int9")

    def test_example_script(self):
        out = subprocess.run(
            [sys.executable, EXAMPLE, "--server", self.server.address, "--limit", "3000"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for text in ("float", "QAT int8", "QT int8", "dot_general0_lhs", "scale"):
            self.assertIn(text, out.stdout)


if __name__ == "__main__":
    unittest.main()


class TlsTest(unittest.TestCase):
    """The package against a mutual-TLS server (certificates made by openssl here)."""

    def test_mutual_tls(self):
        with tempfile.TemporaryDirectory() as d:
            certs = make_certificates(d)
            server = Server([f"--tls_cert={certs['server.pem']}",
                             f"--tls_key={certs['server.key']}",
                             f"--tls_client_ca={certs['ca.pem']}"])
            try:
                with qtrain.Client(server.address, tls_ca=certs["ca.pem"],
                                   tls_cert=certs["client.pem"],
                                   tls_key=certs["client.key"]) as c:
                    self.assertTrue(c.server_info().active_isa)
                with qtrain.Client(server.address, tls_ca=certs["ca.pem"]) as c:
                    with self.assertRaises(qtrain.QtrainError):  # no client certificate
                        c.server_info()
                with qtrain.Client(server.address) as c:
                    with self.assertRaises(qtrain.QtrainError):  # plaintext
                        c.server_info()
                with self.assertRaises(ValueError):
                    qtrain.Client(server.address, tls_ca=certs["ca.pem"],
                                  tls_cert=certs["client.pem"])
            finally:
                server.stop()

    def test_tls_with_tokens_and_tenants(self):
        with tempfile.TemporaryDirectory() as d:
            certs = make_certificates(d)
            entries, tokens = [], {}
            for tenant, role in (("team-a", "trainer"), ("team-b", "reader")):
                made = json.loads(subprocess.run(
                    [QTRAIN_CLI, "token", "new", f"--tenant={tenant}", f"--role={role}",
                     "--json"], check=True, capture_output=True, text=True).stdout)
                entries.append(made["entry"])
                tokens[tenant] = made["token"]
            access = os.path.join(d, "access.json")
            with open(access, "w") as f:
                json.dump({"tokens": entries}, f)
            server = Server([f"--tls_cert={certs['server.pem']}",
                             f"--tls_key={certs['server.key']}", f"--auth_tokens={access}"])
            try:
                with qtrain.Client(server.address, tls_ca=certs["ca.pem"],
                                   token=tokens["team-a"]) as a:
                    a.create_session("mine", model=MLP, seed=1)
                    self.assertEqual([s.session_id for s in a.list_sessions()], ["mine"])
                with qtrain.Client(server.address, tls_ca=certs["ca.pem"],
                                   token=tokens["team-b"]) as b:
                    self.assertEqual(list(b.list_sessions()), [])  # A's session is invisible
                    with self.assertRaises(qtrain.QtrainError) as e:
                        b.get_session("mine")
                    self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
                    with self.assertRaises(qtrain.QtrainError) as e:  # a reader may not create
                        b.create_session("theirs", model=MLP, seed=1)
                    self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
                with qtrain.Client(server.address, tls_ca=certs["ca.pem"]) as anonymous:
                    with self.assertRaises(qtrain.QtrainError) as e:
                        anonymous.list_sessions()
                    self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(ValueError):  # a token never goes out in plaintext
                    qtrain.Client(server.address, token=tokens["team-a"])
            finally:
                server.stop()
