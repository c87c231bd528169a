"""torchvision's ResNet, imported by name (no spec, no module map), against torchvision itself
(torchvision_checks.py)."""

import unittest

import numpy as np
import torch
import torchvision

import qtrain
from torchvision_checks import TorchvisionCase, random_model  # noqa: E402


class TorchvisionResnetTest(TorchvisionCase):
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
        model = random_model(torchvision.models.resnet18, 0, num_classes=10)
        self.check_eval("rn18-eval", model, 64)

    def test_resnet18_train_step_equals_torch_autograd(self):
        model = random_model(torchvision.models.resnet18, 2, num_classes=10)
        self.check_train_step("rn18-train", model, 32, lr=0.5)

    def test_resnet18_onnx_exports_run_in_onnx_runtime(self):
        model = random_model(torchvision.models.resnet18, 4, num_classes=10)
        self.check_onnx("rn18-onnx", model, 32)

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
