"""torchvision's VisionTransformer (patch convolution, class token, position embedding, packed
nn.MultiheadAttention, exact GELU), reduced to 32x32 images, patch 8 and 2 layers (the code path
of vit_b_16), imported by name against torchvision itself (torchvision_checks.py)."""

import unittest

import torch
from torchvision.models import VisionTransformer, vit_b_16

import qtrain
from torchvision_checks import TorchvisionCase, random_model  # noqa: E402

SMALL = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48,
             num_classes=10)


def small_vit(seed, **overrides):
    """A reduced ViT with non-trivial class token and LayerNorms (torchvision starts the class
    token at zero and the LayerNorms at the identity)."""
    model = random_model(VisionTransformer, seed, **{**SMALL, **overrides})
    with torch.no_grad():
        model.class_token.normal_()
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


class TorchvisionVitTest(TorchvisionCase):
    def test_the_architecture_is_recognised_from_the_model_object(self):
        a = qtrain.torchvision_architecture(vit_b_16(num_classes=7))
        self.assertEqual(a, {"name": "torchvision:vit_b_16", "options": {"num_classes": 7},
                             "input_shape": [224, 224, 3]})
        a = qtrain.torchvision_architecture(small_vit(0))
        self.assertEqual(a, {"name": "torchvision:vit_b_16", "options": {
            "num_classes": 10, "patch_size": 8, "num_layers": 2, "num_heads": 4,
            "hidden_dim": 32, "mlp_dim": 48, "image_size": 32}, "input_shape": [32, 32, 3]})

    def test_eval_outputs_equal_torchvisions(self):
        self.check_eval("vit-eval", small_vit(0), 32)

    def test_a_representation_layer_imports_and_matches(self):
        self.check_eval("vit-repr", small_vit(1, representation_size=24), 32)

    def test_train_step_equals_torch_autograd(self):
        self.check_train_step("vit-train", small_vit(2), 32, lr=0.1)

    def test_onnx_exports_run_in_onnx_runtime(self):
        # The attention einsums' static scales shared over every axis: ONNX's QuantizeLinear
        # takes one scale or one axis of them (docs/calibration.md).
        self.check_onnx("vit-onnx", small_vit(4), 32, rules={"rules": [
            {"op_names": ["einsum"], "weight_qtype": "int8", "act_qtype": "int8",
             "act_static_scale": True, "act_batch_axes": {"axes": [0, 1, 2, 3]}},
            {"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]})

    def test_bad_options_are_named(self):
        with self.assertRaises(qtrain.QtrainError) as e:
            self.client.create_session("vit-bad", {"name": "torchvision:vit_b_16", "options": {
                "image_size": 30, "patch_size": 8}, "input_shape": [30, 30, 3]})
        self.assertIn("image_size 30 is not divisible by patch_size 8", e.exception.message)
        with self.assertRaises(qtrain.QtrainError) as e:
            self.client.create_session("vit-bad", {"name": "torchvision:vit_b_16",
                                                   "options": {"attention_dropout": 0.1}})
        self.assertIn("attention_dropout", e.exception.message)


if __name__ == "__main__":
    unittest.main()
