"""Bring your own model: a Fashion-MNIST MLP trained in PyTorch (Debian's python3-torch) is
imported into a session through ImportWeights and gives PyTorch's outputs; then the session
calibrates and quantizes like any other. Also the safetensors writer and torch_module_map."""

import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

import qtrain
from tests_server import Server  # noqa: E402  (same folder)
from torch_models import CNN_MAP, CNN_SPEC, SPEC, nchw, trained_torch_cnn, trained_torch_mlp


EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "import_and_calibrate.py")


class ImportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = qtrain.Client(cls.server.address)
        cls.xt, cls.yt = qtrain.load_fashion_mnist("t10k", limit=512)
        cls.model = trained_torch_mlp()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_module_map_pairs_layers_in_order(self):
        spec = qtrain.client._message(SPEC, qtrain.client.model_pb2.ModelSpec)
        self.assertEqual(qtrain.torch_module_map(self.model, spec), {"Dense_0": "1", "head": "3"})
        with self.assertRaises(ValueError):  # a model with another layer count
            qtrain.torch_module_map(torch.nn.Sequential(torch.nn.Linear(784, 10)), spec)

    def test_imported_model_gives_pytorchs_outputs(self):
        session = self.client.import_weights("torch-mlp", SPEC, self.model)
        self.assertEqual(session.step, 0)
        self.assertEqual(session.parameters, 784 * 256 + 256 + 256 * 10 + 10)
        with torch.no_grad():
            want = self.model(torch.from_numpy(self.xt)).numpy()
        got = self.client.forward("torch-mlp", self.xt)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        accuracy = float(np.mean(np.argmax(got, axis=1) == self.yt))
        self.assertGreater(accuracy, 0.75)
        # Then PTQ like any session: calibrate static int8 scales, quantized outputs stay close.
        self.client.update_rules("torch-mlp", "srq-int8")
        self.client.calibrate("torch-mlp", qtrain.batches(self.xt, None, batch_size=128))
        quantized = self.client.forward("torch-mlp", self.xt)
        self.assertGreater(float(np.mean(np.argmax(quantized, axis=1) == self.yt)),
                           accuracy - 0.03)
        # Export under the torch names; int8 weights dequantize to PyTorch's within a step.
        with tempfile.TemporaryDirectory() as d:
            arrays, config = self.client.export_quantized("torch-mlp", d,
                                                          module_map={"Dense_0": "1", "head": "3"})
            self.assertTrue(os.path.exists(os.path.join(d, "config.json")))
        self.assertEqual(config["quant_method"], "compressed-tensors")
        w = self.model.state_dict()["1.weight"].numpy()
        self.assertEqual(arrays["1.weight"].dtype, np.int8)
        deq = arrays["1.weight"].astype(np.float32) * arrays["1.weight_scale"]
        self.assertLessEqual(float(np.max(np.abs(deq - w) - arrays["1.weight_scale"] / 2)), 1e-7)
        self.assertEqual(arrays["3.input_scale"].shape, (1,))

    def test_a_pytorch_cnn_with_flatten_imports_without_hand_permutation(self):
        # nn.Flatten of NCHW maps orders the Linear's inputs (c, h, w); the session flattens NHWC
        # maps (h, w, c). The importer reorders the head's rows; the exports give them back.
        model = trained_torch_cnn(examples=3200, epochs=1)
        spec = qtrain.client._message(CNN_SPEC, qtrain.client.model_pb2.ModelSpec)
        self.assertEqual(qtrain.torch_module_map(model, spec), CNN_MAP)
        self.client.import_weights("torch-cnn", CNN_SPEC, model)
        with torch.no_grad():
            want = model(nchw(self.xt)).numpy()
        got = self.client.forward("torch-cnn", self.xt)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        self.assertGreater(float(np.mean(np.argmax(got, axis=1) == self.yt)), 0.6)
        # The reordering is needed: the same weights without it give other outputs.
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        hwc = state["7.weight"].reshape(10, 16, 7, 7).transpose(0, 2, 3, 1).reshape(10, -1)
        self.client.import_weights("torch-cnn-hwc", CNN_SPEC, dict(state, **{"7.weight": hwc}),
                                   module_map=CNN_MAP)
        wrong = self.client.forward("torch-cnn-hwc", self.xt)
        self.assertGreater(float(np.max(np.abs(wrong - want))), 0.1)
        self.client.delete_session("torch-cnn-hwc")
        # The float checkpoint's export and the int8 export hold PyTorch's order again.
        self.client.update_rules("torch-cnn", "srq-int8")
        self.client.calibrate("torch-cnn", qtrain.batches(self.xt, None, batch_size=128))
        with tempfile.TemporaryDirectory() as d:
            arrays, _ = self.client.export_quantized("torch-cnn", d, module_map=CNN_MAP)
        w = state["7.weight"]
        deq = arrays["7.weight"].astype(np.float32) * arrays["7.weight_scale"]
        self.assertLessEqual(float(np.max(np.abs(deq - w) - arrays["7.weight_scale"] / 2)), 1e-7)
        self.client.delete_session("torch-cnn")

    def test_torch_activations_give_pytorchs_outputs_and_gradients(self):
        # ReLU6, Hardswish, Sigmoid and the exact (erf) GELU against PyTorch: the same outputs,
        # and one SGD step moves every weight as torch autograd's gradients do.
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU6(),
            torch.nn.Linear(64, 64), torch.nn.Hardswish(), torch.nn.Linear(64, 32),
            torch.nn.Sigmoid(), torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 10))
        with torch.no_grad():  # wide enough inputs to reach ReLU6's and Hardswish's corners
            for layer in (model[1], model[3]):
                layer.weight.mul_(16.0)
        layers = [{"flatten": {}}]
        for features, kind in ((64, "RELU6"), (64, "HARD_SWISH"), (32, "SIGMOID"),
                               (32, "GELU_EXACT")):
            layers += [{"linear": {"features": features}}, {"activation": {"kind": kind}}]
        spec = {"input": {"shape": [28, 28, 1]},
                "body": {"sequential": {"layers": layers + [{"linear": {"features": 10}}]}}}
        c = self.client
        c.import_weights("torch-acts", spec, model,
                         optimizer={"sgd": {}, "schedule": {"learning_rate": 0.5}})
        x, y = self.xt[:64], self.yt[:64]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = c.forward("torch-acts", x)
        self.assertLess(float(np.max(np.abs(got - want))), 1e-5 * float(np.max(np.abs(want))) + 1e-6)
        h = torch.from_numpy(x).reshape(64, -1)
        relu6 = model[2](model[1](h))
        self.assertGreater(float((relu6 == 6).float().mean()), 0.01)  # the corner is exercised
        # One step: w' = w - 0.5 * dL/dw with L the mean cross-entropy, in both.
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                 torch.from_numpy(y.astype(np.int64)))
        loss.backward()
        list(c.train("torch-acts", [(x, y)]))
        arrays, _ = c.checkpoint_arrays("torch-acts")
        pairs = {"Dense_0": model[1], "Dense_1": model[3], "Dense_2": model[5],
                 "Dense_3": model[7], "Dense_4": model[9]}
        for name, layer in pairs.items():
            with torch.no_grad():
                w = (layer.weight - 0.5 * layer.weight.grad).numpy().T
                b = (layer.bias - 0.5 * layer.bias.grad).numpy()
            for got_w, want_w in ((arrays[f"params/{name}/kernel"], w),
                                  (arrays[f"params/{name}/bias"], b)):
                step = 0.5 * np.abs(layer.weight.grad.numpy()).max()
                self.assertLess(float(np.max(np.abs(got_w - want_w))), 1e-4 * step + 1e-6, name)
        c.delete_session("torch-acts")

    def test_a_state_dict_with_a_wrong_shape_is_refused_by_name(self):
        state = {k: v.numpy() for k, v in self.model.state_dict().items()}
        state["3.weight"] = state["3.weight"][:, :100]
        with self.assertRaises(qtrain.QtrainError) as e:
            self.client.import_weights("bad", SPEC, state, module_map={"Dense_0": "1", "head": "3"})
        self.assertIn("3.weight is [10, 100]", e.exception.message)
        self.assertNotIn("bad", [s.session_id for s in self.client.list_sessions()])

    def test_the_example_imports_and_calibrates_with_every_calibrator(self):
        out = subprocess.run([sys.executable, EXAMPLE, "--server", self.server.address,
                              "--epochs", "1", "--limit", "6400"],
                             check=True, capture_output=True, text=True).stdout
        rows = dict(line.rsplit(None, 1) for line in out.splitlines()[1:])
        rows = {k.strip(): float(v) for k, v in rows.items()}
        # Outputs agree to 1e-5; an exact tie between two logits could still flip one argmax.
        self.assertAlmostEqual(rows["qtrain float (imported)"], rows["PyTorch float"], delta=2e-4)
        for method in ("absmax", "percentile,99.9", "mse", "entropy"):
            self.assertGreater(rows[f"SRQ int8, {method}"], rows["PyTorch float"] - 0.03, out)

    def test_safetensors_round_trip(self):
        arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3).T, "i": np.array([1, -2], np.int32)}
        data = qtrain.save_safetensors(arrays, metadata={"format": "pt"})
        back, metadata = qtrain.load_safetensors(data)
        np.testing.assert_array_equal(back["w"], arrays["w"])
        np.testing.assert_array_equal(back["i"], arrays["i"])
        self.assertEqual(metadata, {"format": "pt"})


if __name__ == "__main__":
    unittest.main()
