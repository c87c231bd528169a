"""torchvision's ResNet, imported by name (no spec, no module map), against torchvision itself:
eval-mode outputs, one train-mode SGD step (torch autograd's gradients, BatchNorm's batch
statistics and running-statistics update), checkpoints that keep the running statistics, and the
ONNX export in ONNX Runtime. Random weights: nothing downloads."""

import os
import tempfile
import unittest

import numpy as np
import torch
import torchvision

import qtrain
from tests_server import Server  # noqa: E402  (same folder)
from test_ptq import ensure_onnxruntime, run_onnx  # noqa: E402


def randomize_batch_norms(model, seed):
    """Non-trivial affine parameters and running statistics (a fresh BatchNorm is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def qtrain_name(torch_name, value):
    """The checkpoint name of a torchvision state-dict entry, and the array in qtrain's layout."""
    module, leaf = torch_name.rsplit(".", 1)
    path = module.replace(".", "/")
    v = value.detach().numpy()
    if leaf == "running_mean":
        return f"batch_stats/{path}/mean", v
    if leaf == "running_var":
        return f"batch_stats/{path}/var", v
    if leaf == "weight" and v.ndim == 4:
        return f"params/{path}/kernel", v.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf == "weight" and v.ndim == 2:
        return f"params/{path}/kernel", v.T
    if leaf == "weight":
        return f"params/{path}/scale", v
    return f"params/{path}/{leaf}", v


def nhwc(x):
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def relative_to_peak(got, want):
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


class TorchvisionResnetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = qtrain.Client(cls.server.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_the_architecture_is_recognised_from_the_model_object(self):
        for builder, name in ((torchvision.models.resnet18, "torchvision:resnet18"),
                              (torchvision.models.resnet50, "torchvision:resnet50")):
            a = qtrain.torchvision_architecture(builder(num_classes=7), input_shape=(32, 32, 3))
            self.assertEqual(a, {"name": name, "options": {"num_classes": 7},
                                 "input_shape": [32, 32, 3]})
        with self.assertRaises(ValueError):
            qtrain.torchvision_architecture(torchvision.models.resnext50_32x4d())
        with self.assertRaises(ValueError):
            qtrain.torchvision_architecture(torch.nn.Linear(2, 2))

    def test_resnet18_eval_outputs_equal_torchvisions(self):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10)
        randomize_batch_norms(model, 1)
        model.eval()
        session = self.client.import_weights("rn18-eval", None, model, input_shape=(64, 64, 3))
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()))
        self.assertEqual(session.non_trainable,
                         sum(b.numel() for n, b in model.named_buffers() if "running" in n))
        x = torch.randn(4, 3, 64, 64)
        with torch.no_grad():
            want = model(x).numpy()
        got = self.client.forward("rn18-eval", nhwc(x))
        self.assertLess(relative_to_peak(got, want), 1e-4)
        # The checkpoint holds the running statistics as imported, under batch_stats/.
        arrays, _ = self.client.checkpoint_arrays("rn18-eval")
        for name, value in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            key, v = qtrain_name(name, value)
            np.testing.assert_array_equal(arrays[key], v, err_msg=key)
        self.client.delete_session("rn18-eval")

    def test_resnet18_train_step_equals_torch_autograd(self):
        torch.manual_seed(2)
        model = torchvision.models.resnet18(num_classes=10)
        randomize_batch_norms(model, 3)
        model.train()
        lr = 0.5
        self.client.import_weights("rn18-train", {"name": "torchvision:resnet18",
                                                  "options": {"num_classes": 10}}, model,
                                   input_shape=(32, 32, 3),
                                   optimizer={"sgd": {}, "schedule": {"learning_rate": lr}})
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = torch.randn(8, 3, 32, 32)
        y = torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(model(x), y)  # updates the running statistics
        loss.backward()
        (step,) = list(self.client.train("rn18-train", [(nhwc(x), y.numpy().astype(np.int32))]))
        self.assertAlmostEqual(step.loss, float(loss), delta=1e-4 * abs(float(loss)))
        arrays, _ = self.client.checkpoint_arrays("rn18-train")
        params = dict(model.named_parameters())
        checked = 0
        for name, value in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            key, got_layout = qtrain_name(name, value)
            if name in params:  # w' = w - lr * dL/dw
                grad = params[name].grad
                _, want = qtrain_name(name, before[name] - lr * grad)
                step_size = lr * float(grad.abs().max())
                self.assertLess(float(np.max(np.abs(arrays[key] - want))),
                                1e-4 * step_size + 1e-6, name)
            else:  # running statistics after one train-mode batch (unbiased variance)
                self.assertLess(relative_to_peak(arrays[key], got_layout), 1e-4, name)
            checked += 1
        self.assertEqual(checked, len(model.state_dict()) - 20)  # 20 num_batches_tracked
        self.client.delete_session("rn18-train")

    def test_resnet18_onnx_exports_run_in_onnx_runtime(self):
        # Float: BatchNormalization nodes with the running statistics after each Conv, equal to
        # the server's Forward. SRQ int8: QDQ around every conv and the fc, calibrated statically;
        # ONNX Runtime and the server may round a value on a rounding boundary differently, which
        # moves the logits by a few quantization steps at most.
        ensure_onnxruntime()
        torch.manual_seed(4)
        model = torchvision.models.resnet18(num_classes=10)
        randomize_batch_norms(model, 5)
        c = self.client
        c.import_weights("rn18-onnx", None, model, input_shape=(32, 32, 3))
        x = nhwc(torch.randn(16, 3, 32, 32))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "float.onnx")
            c.export_onnx("rn18-onnx", path)
            want = c.forward("rn18-onnx", x)
            self.assertLess(relative_to_peak(run_onnx(path, x), want), 1e-4)
            c.update_rules("rn18-onnx", "srq-int8")
            c.calibrate("rn18-onnx", [nhwc(torch.randn(16, 3, 32, 32)) for _ in range(4)])
            path = os.path.join(d, "int8.onnx")
            c.export_onnx("rn18-onnx", path)
            want = c.forward("rn18-onnx", x)
            got = run_onnx(path, x)
            self.assertLess(relative_to_peak(got, want), 0.05)
            self.assertGreaterEqual(float(np.mean(np.argmax(got, 1) == np.argmax(want, 1))), 0.9)
        c.delete_session("rn18-onnx")

    def test_unused_and_missing_tensors_are_named(self):
        model = torchvision.models.resnet18(num_classes=10)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        state["extra.weight"] = np.zeros(3, np.float32)
        del state["layer2.0.downsample.1.running_var"]
        with self.assertRaises(qtrain.QtrainError) as e:
            self.client.import_weights(
                "rn18-bad", {"name": "torchvision:resnet18", "options": {"num_classes": 10}},
                state)
        self.assertIn("layer2.0.downsample.1.running_var", e.exception.message)
        self.assertIn("extra.weight", e.exception.message)
        with self.assertRaises(qtrain.QtrainError) as e:
            self.client.import_weights("rn18-bad", {"name": "torchvision:resnet18",
                                                    "options": {"width_mult": 2}}, state)
        self.assertIn("unknown option width_mult", e.exception.message)


if __name__ == "__main__":
    unittest.main()
