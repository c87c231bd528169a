"""Checks of a torchvision model imported into qtrain by name, against torchvision itself:
eval-mode outputs, one train-mode SGD step (torch autograd's gradients, BatchNorm's batch
statistics and running-statistics update), checkpoints that keep the running statistics, and the
ONNX export in ONNX Runtime. Random weights: nothing downloads. Used by test_torchvision*.py."""

import os
import tempfile

import numpy as np
import torch

from kink_reference import gradients_with_kink_slack, pick_input  # noqa: E402  (same folder)
from tests_server import ServerCase  # noqa: E402
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


def random_model(builder, seed, **kwargs):
    """builder(**kwargs) with torch's random init from `seed` and randomised BatchNorms."""
    torch.manual_seed(seed)
    model = builder(**kwargs)
    randomize_batch_norms(model, seed + 1)
    return model


def qtrain_name(torch_name, value):
    """The checkpoint name of a torchvision state-dict entry, and the array in qtrain's layout."""
    v = value.detach().numpy()
    if torch_name == "class_token":  # nn.Parameter attributes: a module of their own in qtrain
        return "params/class_token/token", v
    if torch_name == "encoder.pos_embedding":
        return "params/encoder/pos_embedding/embedding", v
    module, leaf = torch_name.rsplit(".", 1)
    path = module.replace(".", "/")
    if leaf == "in_proj_weight":  # nn.MultiheadAttention's packed q | k | v projection
        return f"params/{path}/in_proj/kernel", v.T
    if leaf == "in_proj_bias":
        return f"params/{path}/in_proj/bias", v
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


class TorchvisionCase(ServerCase):
    """A server for the class, and the checks each model family runs."""

    def check_eval(self, sid, model, hw):
        """Eval-mode logits equal torchvision's; the checkpoint holds the state dict as imported
        (running statistics under batch_stats/)."""
        model.eval()
        session = self.client.import_weights(sid, None, model, input_shape=(hw, hw, 3))
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()))
        self.assertEqual(session.non_trainable,
                         sum(b.numel() for n, b in model.named_buffers() if "running" in n))
        x = torch.randn(4, 3, hw, hw)
        with torch.no_grad():
            want = model(x).numpy()
        got = self.client.forward(sid, nhwc(x))
        self.assertLess(relative_to_peak(got, want), 1e-4)
        arrays, _ = self.client.checkpoint_arrays(sid)
        for name, value in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            key, v = qtrain_name(name, value)
            np.testing.assert_array_equal(arrays[key], v, err_msg=key)
        self.client.delete_session(sid)

    def check_train_step(self, sid, model, hw, lr, classes=10, batch=8, tolerance=3e-4):
        """One SGD step from the same weights: the loss, every updated parameter
        (w' = w − lr·dL/dw with torch autograd's gradient, computed in float64 so that the
        reference carries no rounding of its own) and the running statistics. Where an
        activation input sits within float32 drift of a kink, either branch is right: the
        gradients may move by that element's flip (kink_reference)."""
        model.train()
        self.client.import_weights(sid, None, model, input_shape=(hw, hw, 3),
                                   optimizer={"sgd": {}, "schedule": {"learning_rate": lr}})
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = pick_input(model, lambda: torch.randn(batch, 3, hw, hw))
        y = torch.randint(0, classes, (batch,))
        ref, loss, slack = gradients_with_kink_slack(
            model, x, lambda logits: torch.nn.functional.cross_entropy(logits, y))
        (step,) = list(self.client.train(sid, [(nhwc(x), y.numpy().astype(np.int32))]))
        self.assertAlmostEqual(step.loss, float(loss), delta=1e-4 * abs(float(loss)))
        arrays, _ = self.client.checkpoint_arrays(sid)
        params = dict(ref.named_parameters())
        checked = 0
        for name, value in ref.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            key, want = qtrain_name(name, value.float())
            if name in params:
                grad = params[name].grad.float()
                _, want = qtrain_name(name, before[name] - lr * grad)
                _, allowed = qtrain_name(name, 1.5 * lr * slack[name].float())
                step_size = lr * float(grad.abs().max())
                excess = np.abs(arrays[key] - want) - allowed
                self.assertLess(float(np.max(excess)), tolerance * step_size + 1e-6, name)
            else:  # running statistics after one train-mode batch (unbiased variance)
                self.assertLess(relative_to_peak(arrays[key], want), 1e-4, name)
            checked += 1
        tracked = sum(1 for n in model.state_dict() if n.endswith("num_batches_tracked"))
        self.assertEqual(checked, len(model.state_dict()) - tracked)
        self.client.delete_session(sid)

    def check_onnx(self, sid, model, hw, rules="srq-int8"):
        """Float: the export equals the server's Forward in ONNX Runtime. SRQ int8: QDQ around
        every conv and dense, calibrated statically; ONNX Runtime and the server may round a value
        on a rounding boundary differently, which moves the logits by a few steps at most."""
        ensure_onnxruntime()
        c = self.client
        c.import_weights(sid, None, model, input_shape=(hw, hw, 3))
        x = nhwc(torch.randn(16, 3, hw, hw))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "float.onnx")
            c.export_onnx(sid, path)
            want = c.forward(sid, x)
            self.assertLess(relative_to_peak(run_onnx(path, x), want), 1e-4)
            c.update_rules(sid, rules)
            c.calibrate(sid, [nhwc(torch.randn(16, 3, hw, hw)) for _ in range(4)])
            path = os.path.join(d, "int8.onnx")
            c.export_onnx(sid, path)
            want = c.forward(sid, x)
            got = run_onnx(path, x)
            self.assertLess(relative_to_peak(got, want), 0.05)
            self.assertGreaterEqual(float(np.mean(np.argmax(got, 1) == np.argmax(want, 1))), 0.9)
        c.delete_session(sid)
