#!/usr/bin/python3
"""PyTorch side of the training-step comparison (bench/train_bench.cc measures qtrain).

Same models, batches, loss and plain SGD as the C++ benchmark: an MLP 784-1024-1024-10 at batch
256 (cross-entropy), a pre-norm transformer block (d_model 512, 8 heads, ff 2048, GELU,
sequence 128, batch 16; MSE), torchvision's resnet18 and mobilenet_v2 (10 classes, 64x64x3,
batch 32, cross-entropy). Modes: float, fake-quant QAT through torch.ao.quantization
(prepare_qat with the fbgemm QAT qconfig: per-channel int8 weights, per-tensor int8
activations), and "infer" (the float model's eval-mode forward under no_grad; torchvision models
only). Prints one JSON object per line: {"model", "mode", "threads", "ms"}.
Run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset so OpenBLAS picks its best kernels.
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.quantization as tq
import torchvision


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.l1, self.l2, self.l3 = nn.Linear(784, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = F.relu(self.l1(x))
        x = F.relu(self.l2(x))
        return self.dequant(self.l3(x))


class Block(nn.Module):
    def __init__(self, d=512, heads=8, ff=2048):
        super().__init__()
        self.heads = heads
        self.quant = tq.QuantStub()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.f1, self.f2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        b, t, d = x.shape
        h = self.ln1(x)
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.f2(F.gelu(self.f1(self.ln2(x)), approximate="tanh"))
        return self.dequant(x)


def make(model_name, mode):
    torch.manual_seed(0)
    if model_name == "mlp":
        model = Mlp()
        x, y = torch.randn(256, 784), torch.arange(256) % 10
        loss_fn = F.cross_entropy
    elif model_name in ("resnet18", "mobilenet_v2"):
        model = getattr(torchvision.models, model_name)(num_classes=10)
        x, y = torch.randn(32, 3, 64, 64), torch.arange(32) % 10
        loss_fn = F.cross_entropy
    else:
        model = Block()
        x, y = torch.randn(16, 128, 512), torch.randn(16, 128, 512)
        loss_fn = F.mse_loss
    if mode == "infer":
        model.eval()

        def forward():
            with torch.no_grad():
                model(x)
        return forward
    model.train()
    if mode == "qat":
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.qconfig = None
        tq.prepare_qat(model, inplace=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def measure(step, seconds=1.5, least=5):
    for _ in range(3):
        step()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < least:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    threads = [int(a) for a in sys.argv[1:]] or [1, 2]
    for n in threads:
        torch.set_num_threads(n)
        for model_name in ("mlp", "block", "resnet18", "mobilenet_v2"):
            modes = ("float", "qat") if model_name in ("mlp", "block") else ("float", "qat", "infer")
            for mode in modes:
                step = make(model_name, mode)
                # The torchvision models take up to a second a step: fewer, as long, repetitions.
                small = model_name in ("mlp", "block")
                ms = min(measure(step, seconds=0.6, least=5 if small else 2)
                         for _ in range(5 if small else 3))
                print(json.dumps({"model": model_name, "mode": mode, "threads": n,
                                  "ms": round(ms, 3)}), flush=True)


if __name__ == "__main__":
    main()
