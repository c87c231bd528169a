"""Llama-family decoders (rotary embeddings with llama3 / linear scaling, grouped KV heads, RMSNorm,
gated SiLU MLP, Qwen2's q/k/v biases) built from the module vocabulary under Hugging Face's names,
against hf_reference.py's PyTorch model written from HF's equations: logits and one SGD step's
parameters (torch autograd in float64). The weights go in by their HF names, no module map."""

import copy
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch

import qtrain
from hf_reference import assert_sgd_step, LlamaForCausalLM
from tests_server import BUILD_DIR, ServerCase

LLAMA = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}
QWEN2 = {"model_type": "qwen2", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 48,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
         "head_dim": 8, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "rope_scaling": {"rope_type": "linear", "factor": 2.0}}


def spec_of(c, seq):
    """The model spec of config `c`, module paths equal to HF's parameter names."""
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    rotary = {"theta": c["rope_theta"]}
    scaling = c.get("rope_scaling")
    if scaling and scaling["rope_type"] == "linear":
        rotary.update(scaling="LINEAR", factor=scaling["factor"])
    elif scaling:
        rotary.update(scaling="LLAMA3", factor=scaling["factor"],
                      low_freq_factor=scaling["low_freq_factor"],
                      high_freq_factor=scaling["high_freq_factor"],
                      original_max_position_embeddings=scaling["original_max_position_embeddings"])
    qwen2 = c["model_type"] == "qwen2"
    attention = {"num_heads": c["num_attention_heads"], "num_kv_heads": c["num_key_value_heads"],
                 "head_dim": head_dim, "causal": True, "projection_names": "HF",
                 "no_qkv_bias": not qwen2, "no_out_bias": True, "rotary": rotary}
    eps = c["rms_norm_eps"]

    def block(*layers):
        return {"residual": {"share_scope": True, "body": {"sequential": {"layers": list(layers)}}}}
    layers = [{"name": str(i), "sequential": {"layers": [
        block({"name": "input_layernorm", "rms_norm": {"epsilon": eps}},
              {"name": "self_attn", "attention": attention}),
        block({"name": "post_attention_layernorm", "rms_norm": {"epsilon": eps}},
              {"name": "mlp", "gated_mlp": {"hidden_features": c["intermediate_size"],
                                            "activation": "SILU"}})]}}
        for i in range(c["num_hidden_layers"])]
    return {"input": {"kind": "TOKENS", "shape": [seq]}, "body": {"sequential": {"layers": [
        {"name": "model", "sequential": {"layers": [
            {"name": "embed_tokens",
             "embedding": {"num_embeddings": c["vocab_size"], "features": c["hidden_size"]}},
            {"name": "layers", "sequential": {"layers": layers}},
            {"name": "norm", "rms_norm": {"epsilon": eps}}]}},
        {"name": "lm_head", "linear": {"features": c["vocab_size"], "no_bias": True}}]}}}


def random_model(c, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(c)
    with torch.no_grad():  # RMSNorm weights start at 1: make them count
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def qtrain_name(name, value):
    """The checkpoint key and array of an HF parameter: Linear weights are kernels (in, out)."""
    v = value.detach().numpy()
    module, leaf = name.rsplit(".", 1)
    path = module.replace(".", "/")
    if leaf == "weight" and name.startswith("model.embed_tokens"):
        return f"params/{path}/embedding", v
    if leaf == "weight" and v.ndim == 2:
        return f"params/{path}/kernel", v.T
    if leaf == "weight":
        return f"params/{path}/scale", v
    return f"params/{path}/bias", v


class HfLlamaTest(ServerCase):
    def check(self, name, c, seq=12, batch=3, lr=0.1):
        model = random_model(c, 7)
        weights = {k: v.numpy() for k, v in model.state_dict().items()}
        self.client.import_weights(name, spec_of(c, seq), weights,
                                   optimizer={"sgd": {}, "schedule": {"learning_rate": lr}})
        ref = copy.deepcopy(model).double()
        ids = torch.randint(0, c["vocab_size"], (batch, seq))
        logits = ref(ids)
        got = self.client.forward(name, ids.numpy().astype(np.int32))
        want = logits.detach().numpy()
        self.assertEqual(got.shape, want.shape)
        self.assertLess(float(np.abs(got - want).max() / np.abs(want).max()), 1e-4)

        labels = torch.randint(0, c["vocab_size"], (batch, seq))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["vocab_size"]),
                                                 labels.reshape(-1))
        loss.backward()
        (step,) = list(self.client.train(name, [(ids.numpy().astype(np.int32),
                                                 labels.numpy().astype(np.int32))]))
        self.assertAlmostEqual(step.loss, float(loss), delta=1e-4 * float(loss))
        arrays, _ = self.client.checkpoint_arrays(name)
        assert_sgd_step(self, arrays, ref, qtrain_name, lr)
        self.client.delete_session(name)

    def save_hf(self, directory, c, model, shards=1, bf16=False):
        """config.json and model.safetensors (or `shards` files and their index), as
        save_pretrained writes them."""
        config = dict(c, architectures=[{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                         "mistral": "MistralForCausalLM"}[c["model_type"]]],
                      torch_dtype="bfloat16" if bf16 else "float32", transformers_version="4.44.0",
                      max_position_embeddings=64)
        config.setdefault("tie_word_embeddings", False)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f)
        items = [(k, v.float()) for k, v in model.state_dict().items()
                 if not (c.get("tie_word_embeddings") and k == "lm_head.weight")]
        if bf16:  # the file holds bfloat16 bits; widening them is exact
            items = [(k, v.to(torch.bfloat16)) for k, v in items]
        arrays = {k: (v.view(torch.int16).numpy() if bf16 else v.numpy()) for k, v in items}
        names = list(arrays)
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            fname = "model.safetensors" if shards == 1 else \
                f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            data = qtrain.save_safetensors({n: arrays[n] for n in part})
            if bf16:  # qtrain's writer has no BF16 tag: the I16 bits, retagged
                n = int.from_bytes(data[:8], "little")
                header = json.loads(data[8:8 + n])
                for v in header.values():
                    if isinstance(v, dict) and v.get("dtype") == "I16":
                        v["dtype"] = "BF16"
                text = json.dumps(header).encode()
                text += b" " * (-len(text) % 8)
                data = len(text).to_bytes(8, "little") + text + data[8 + n:]
            with open(os.path.join(directory, fname), "wb") as f:
                f.write(data)
            weight_map.update({n: fname for n in part})
        if shards > 1:
            with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": weight_map}, f)
        return {k: v.float() for k, v in items}

    def check_directory(self, name, c, shards=1, bf16=False, seq=10):
        model = random_model(c, 11)
        with tempfile.TemporaryDirectory() as d:
            stored = self.save_hf(d, c, model, shards, bf16)
            session = self.client.import_hf(name, d, seq_len=seq)
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()))
        with torch.no_grad():  # the reference holds what the files hold
            for k, p in model.state_dict().items():
                p.copy_(stored.get(k, p))
        ids = torch.randint(0, c["vocab_size"], (2, seq))
        want = copy.deepcopy(model).double()(ids).detach().numpy()
        got = self.client.forward(name, ids.numpy().astype(np.int32))
        self.assertLess(float(np.abs(got - want).max() / np.abs(want).max()), 1e-4)
        # LlamaForCausalLM's loss: labels unshifted (the ids), −100 ignored, next-token scored.
        labels = ids.clone()
        labels[0, 3] = -100
        logits = torch.from_numpy(want)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, c["vocab_size"]), labels[:, 1:].reshape(-1),
            ignore_index=-100)
        (step,) = list(self.client.train(name, [(ids.numpy().astype(np.int32),
                                                 labels.numpy().astype(np.int32))]))
        self.assertAlmostEqual(step.loss, float(loss), delta=1e-4 * float(loss))
        self.assertEqual(step.examples, 2)
        self.client.delete_session(name)

    def test_a_hf_directory_imports_by_its_config(self):
        self.check_directory("hf-llama", LLAMA)

    def test_known_buffers_are_dropped_and_unknown_tensors_named(self):
        model = random_model(LLAMA, 13)
        head_dim = LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
        inv_freq = np.ones(head_dim // 2, np.float32)
        with tempfile.TemporaryDirectory() as d:
            self.save_hf(d, LLAMA, model)
            path = os.path.join(d, "model.safetensors")
            arrays, _ = qtrain.load_safetensors(path)
            for i in range(LLAMA["num_hidden_layers"]):  # as older Llama checkpoints hold them
                arrays[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
            qtrain.save_safetensors(arrays, path)
            self.client.import_hf("buffers", d, seq_len=8)
            self.client.delete_session("buffers")
            arrays["model.layers.0.self_attn.extra"] = inv_freq
            qtrain.save_safetensors(arrays, path)
            with self.assertRaises(qtrain.QtrainError) as e:
                self.client.import_hf("buffers", d, seq_len=8)
            self.assertIn("not used by the model: model.layers.0.self_attn.extra",
                          str(e.exception))
            self.assertNotIn("inv_freq", str(e.exception))

    def test_the_cli_imports_a_sharded_bf16_directory(self):
        model = random_model(QWEN2, 9)
        cli = os.path.join(BUILD_DIR, "bin", "qtrain")
        with tempfile.TemporaryDirectory() as d:
            stored = self.save_hf(d, QWEN2, model, shards=3, bf16=True)
            out = subprocess.run([cli, "import", "hf-shards", f"--hf={d}", "--seq_len=8",
                                  f"--server={self.server.address}"], capture_output=True,
                                 text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            os.remove(os.path.join(d, "model-00002-of-00003.safetensors"))
            missing = subprocess.run([cli, "import", "hf-shards2", f"--hf={d}", "--seq_len=8",
                                      f"--server={self.server.address}"], capture_output=True,
                                     text=True)
            self.assertEqual(missing.returncode, 2, missing.stderr)
            self.assertIn("model-00002-of-00003.safetensors", missing.stderr)
        with torch.no_grad():
            for k, p in model.state_dict().items():
                p.copy_(stored[k])
        ids = torch.randint(0, QWEN2["vocab_size"], (2, 8))
        want = copy.deepcopy(model).double()(ids).detach().numpy()
        got = self.client.forward("hf-shards", ids.numpy().astype(np.int32))
        self.assertLess(float(np.abs(got - want).max() / np.abs(want).max()), 1e-4)
        self.client.delete_session("hf-shards")

    def test_tied_word_embeddings(self):
        # save_pretrained stores the shared table once, as model.embed_tokens.weight.
        self.check_directory("hf-tied", dict(LLAMA, tie_word_embeddings=True))

    def test_sharded_bf16_qwen2_directory(self):
        self.check_directory("hf-qwen2", QWEN2, shards=3, bf16=True)

    def test_the_cli_imports_a_hf_directory(self):
        model = random_model(LLAMA, 5)
        cli = os.path.join(BUILD_DIR, "bin", "qtrain")
        with tempfile.TemporaryDirectory() as d:
            stored = self.save_hf(d, LLAMA, model)
            out = subprocess.run([cli, "import", "hf-cli", f"--hf={d}", "--seq_len=8",
                                  f"--server={self.server.address}", "--json"],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(json.loads(out.stdout)["parameters"],
                             str(sum(p.numel() for p in model.parameters())))
            bad = subprocess.run([cli, "import", "hf-cli2", f"--hf={d}", "--input_shape=8,8,3",
                                  f"--server={self.server.address}"], capture_output=True,
                                 text=True)
            self.assertEqual(bad.returncode, 2, bad.stderr)
            self.assertIn("--input_shape does not shape --hf=", bad.stderr)
        with torch.no_grad():
            for k, p in model.state_dict().items():
                p.copy_(stored[k])
        ids = torch.randint(0, LLAMA["vocab_size"], (2, 8))
        want = copy.deepcopy(model).double()(ids).detach().numpy()
        got = self.client.forward("hf-cli", ids.numpy().astype(np.int32))
        self.assertLess(float(np.abs(got - want).max() / np.abs(want).max()), 1e-4)
        self.client.delete_session("hf-cli")

    def test_config_fields_it_does_not_implement_are_refused_by_name(self):
        model = random_model(LLAMA, 3)
        cases = [({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
                 ({"hidden_act": "relu2"}, "relu2"),
                 ({"some_new_field": 1}, "some_new_field"),
                 ({"model_type": "gpt_neox"}, "gpt_neox"),
                 ({"layer_types": ["full_attention", "sliding_attention"]}, "sliding_attention")]
        for change, part in cases:
            with tempfile.TemporaryDirectory() as d:
                self.save_hf(d, LLAMA, model)
                path = os.path.join(d, "config.json")
                with open(path) as f:
                    config = json.load(f)
                config.update(change)
                with open(path, "w") as f:
                    json.dump(config, f)
                with self.assertRaises(qtrain.QtrainError) as e:
                    self.client.import_hf("refused", d, seq_len=8)
                self.assertIn(part, str(e.exception))
        with tempfile.TemporaryDirectory() as d:  # a sequence longer than the model's positions
            self.save_hf(d, LLAMA, model)
            with self.assertRaises(qtrain.QtrainError) as e:
                self.client.import_hf("refused", d, seq_len=65)
            self.assertIn("max_position_embeddings = 64", str(e.exception))

    def test_llama_with_llama3_rope_and_grouped_kv_heads(self):
        self.check("llama", LLAMA)

    def test_qwen2_with_qkv_biases_linear_rope_and_one_kv_head(self):
        self.check("qwen2", QWEN2)


if __name__ == "__main__":
    unittest.main()
