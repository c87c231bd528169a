"""torchvision's MobileNetV2 (depthwise convolutions, ReLU6, inverted residuals), imported by
name, against torchvision itself (torchvision_checks.py)."""

import unittest

import torchvision

import qtrain
from torchvision_checks import TorchvisionCase, random_model  # noqa: E402


class TorchvisionMobilenetTest(TorchvisionCase):
    def test_the_architecture_is_recognised_from_the_model_object(self):
        a = qtrain.torchvision_architecture(torchvision.models.mobilenet_v2(num_classes=7))
        self.assertEqual(a, {"name": "torchvision:mobilenet_v2", "options": {"num_classes": 7},
                             "input_shape": [224, 224, 3]})
        a = qtrain.torchvision_architecture(
            torchvision.models.mobilenet_v2(width_mult=0.35, dropout=0.0), input_shape=(32, 32, 3))
        self.assertEqual(a["options"], {"num_classes": 1000, "width_mult": 0.35, "dropout": 0.0})

    def test_eval_outputs_equal_torchvisions(self):
        model = random_model(torchvision.models.mobilenet_v2, 0, num_classes=10)
        self.check_eval("mnv2-eval", model, 64)

    def test_a_narrow_model_imports_and_matches(self):
        model = random_model(torchvision.models.mobilenet_v2, 1, num_classes=5, width_mult=0.35)
        self.check_eval("mnv2-narrow", model, 32)

    def test_train_step_equals_torch_autograd(self):
        # dropout 0: torch's and qtrain's dropout masks differ
        model = random_model(torchvision.models.mobilenet_v2, 2, num_classes=10, dropout=0.0)
        self.check_train_step("mnv2-train", model, 32, lr=0.1)

    def test_onnx_exports_run_in_onnx_runtime(self):
        model = random_model(torchvision.models.mobilenet_v2, 4, num_classes=10)
        self.check_onnx("mnv2-onnx", model, 32)


if __name__ == "__main__":
    unittest.main()
