"""GPT-2 (GPT2LMHeadModel) and BERT (BertModel, BertForSequenceClassification) imported from
directories in Hugging Face's format — the naming variants published checkpoints use, tied and
untied embeddings, padding — against hf_reference.py's PyTorch models written from HF's
equations: outputs within 1e-4 of their peak and one SGD step's parameters (torch autograd in
float64)."""

import copy
import json
import math
import os
import tempfile
import unittest

import numpy as np
import torch

import qtrain
from hf_reference import (assert_sgd_step, BertForSequenceClassification, BertModel,
                          GPT2LMHeadModel)
from tests_server import ServerCase

GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 96,
        "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": None,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
        "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
        "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
        "scale_attn_weights": True, "use_cache": True, "bos_token_id": 95, "eos_token_id": 95,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False}
BERT = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 80,
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 48, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 24,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "position_embedding_type": "absolute", "use_cache": True,
        "classifier_dropout": None}
CONV1D = ("c_attn", "c_proj", "c_fc")
TABLES = ("wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings")


def randomized(model, seed):
    """`model` with every parameter random (norm scales around 1), as a trained one would be."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or "LayerNorm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p) if p.ndim > 1 else 0.1 * torch.randn_like(p))
    return model


def qtrain_name(name, value):
    """The checkpoint key and array of HF parameter `name`."""
    v = value.detach().numpy()
    module, leaf = name.rsplit(".", 1)
    last = module.rsplit(".", 1)[-1]
    path = module.replace(".", "/")
    if leaf == "bias":
        return f"params/{path}/bias", v
    if last in TABLES:
        return f"params/{path}/embedding", v
    if v.ndim == 1:
        return f"params/{path}/scale", v
    return f"params/{path}/kernel", v if last in CONV1D else v.T


def save_hf(directory, config, tensors, shards=1):
    """config.json and model.safetensors, or `shards` files and their index."""
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    names = list(tensors)
    if shards == 1:
        qtrain.save_safetensors(tensors, os.path.join(directory, "model.safetensors"))
        return
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        qtrain.save_safetensors({n: tensors[n] for n in names[i::shards]},
                                os.path.join(directory, fname))
        weight_map.update({n: fname for n in names[i::shards]})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def peak_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


class HfGpt2BertTest(ServerCase):
    def import_dir(self, name, config, tensors, shards=1, **kwargs):
        with tempfile.TemporaryDirectory() as d:
            save_hf(d, config, tensors, shards)
            return self.client.import_hf(name, d, **kwargs)

    def check_step(self, name, model, ids, labels, loss_of, lr=0.1, mask=None):
        """One SGD step of session `name` equals one of float64 `model` on the same batch
        (`mask`: the attention_mask the reference is given)."""
        ref = copy.deepcopy(model).double()
        loss = loss_of(ref(ids) if mask is None else ref(ids, mask), labels)
        loss.backward()
        (step,) = list(self.client.train(name, [(ids.numpy().astype(np.int32),
                                                 labels.numpy().astype(np.int32))]))
        self.assertAlmostEqual(step.loss, float(loss), delta=1e-4 * float(loss))
        arrays, _ = self.client.checkpoint_arrays(name)
        assert_sgd_step(self, arrays, ref, qtrain_name, lr)

    def test_gpt2_as_published_tied_without_prefix_with_mask_buffers(self):
        model = randomized(GPT2LMHeadModel(GPT2), 1)
        # The original gpt2 files: no "transformer." prefix, no lm_head (tied), attn.bias buffers.
        tensors = {k.removeprefix("transformer."): v for k, v in state(model).items()
                   if k != "lm_head.weight"}
        for i in range(GPT2["n_layer"]):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
            tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
        session = self.import_dir("gpt2", GPT2, tensors, seq_len=12,
                                  optimizer={"sgd": {}, "schedule": {"learning_rate": 0.1}})
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()))
        ids = torch.randint(0, GPT2["vocab_size"], (3, 12))
        want = copy.deepcopy(model).double()(ids).detach().numpy()
        got = self.client.forward("gpt2", ids.numpy().astype(np.int32))
        self.assertLess(peak_error(got, want), 1e-4)
        labels = ids.clone()
        labels[1, 4] = -100

        def causal_lm_loss(logits, labels):
            return torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                ignore_index=-100)
        # The tied table's gradient is the embedding's and the head's, summed.
        self.check_step("gpt2", model, ids, labels, causal_lm_loss)

    def test_gpt2_untied_sharded_with_padding(self):
        config = dict(GPT2, tie_word_embeddings=False)
        model = randomized(GPT2LMHeadModel(config), 2)
        pad = 95
        session = self.import_dir("gpt2-pad", config, state(model), shards=2, seq_len=10,
                                  pad_id=pad)
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()))
        ids = torch.randint(0, pad, (3, 10))
        ids[0, 6:] = pad  # right padding
        ids[2, 9:] = pad
        mask = (ids != pad).long()
        want = copy.deepcopy(model).double()(ids, mask).detach().numpy()
        got = self.client.forward("gpt2-pad", ids.numpy().astype(np.int32))
        self.assertLess(peak_error(got, want), 1e-4)
        # Padded positions are not counted: the loss is that of the real next tokens.
        logits = torch.from_numpy(want)
        labels = ids.clone()
        labels[mask == 0] = -100
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, config["vocab_size"]), labels[:, 1:].reshape(-1),
            ignore_index=-100)
        metrics = self.client.evaluate("gpt2-pad", [(ids.numpy().astype(np.int32),
                                                     ids.numpy().astype(np.int32))])
        self.assertAlmostEqual(metrics.loss, float(loss), delta=1e-4 * float(loss))
        # Perplexity over the tokens HF counts: labels not -100 from position 1 on.
        self.assertEqual(metrics.tokens, int((labels[:, 1:] != -100).sum()))
        self.assertAlmostEqual(metrics.perplexity, math.exp(float(loss)),
                               delta=1e-4 * math.exp(float(loss)))

    def test_bert_model_with_legacy_names_and_pad_mask(self):
        model = randomized(BertModel(BERT), 3)
        tensors = {}
        for k, v in state(model).items():  # a task model's "bert." prefix, TF-era gamma / beta
            k = "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma")
            tensors[k.replace("LayerNorm.bias", "LayerNorm.beta")] = v
        tensors["bert.embeddings.position_ids"] = np.arange(24, dtype=np.int64)[None]
        session = self.import_dir("bert", BERT, tensors, seq_len=9)
        # BertModel's output is the last hidden state: the pooler is not part of it.
        pooler = sum(p.numel() for p in model.pooler.parameters())
        self.assertEqual(session.parameters, sum(p.numel() for p in model.parameters()) - pooler)
        ids = torch.randint(1, BERT["vocab_size"], (3, 9))
        ids[1, 5:] = 0  # [PAD] = pad_token_id: masked as the tokenizer's attention_mask
        want = copy.deepcopy(model).double()(ids, (ids != 0).long()).detach().numpy()
        got = self.client.forward("bert", ids.numpy().astype(np.int32))
        self.assertEqual(got.shape, (3, 9, BERT["hidden_size"]))
        self.assertLess(peak_error(got, want), 1e-4)

    def test_bert_sequence_classification_trains_as_torch(self):
        config = dict(BERT, architectures=["BertForSequenceClassification"],
                      id2label={"0": "a", "1": "b", "2": "c"},
                      label2id={"a": 0, "b": 1, "c": 2})
        model = randomized(BertForSequenceClassification(config), 4)
        self.import_dir("bert-cls", config, state(model), seq_len=8,
                        optimizer={"sgd": {}, "schedule": {"learning_rate": 0.1}})
        ids = torch.randint(1, BERT["vocab_size"], (4, 8))
        ids[2, 6:] = 0
        mask = (ids != 0).long()
        want = copy.deepcopy(model).double()(ids, mask).detach().numpy()
        got = self.client.forward("bert-cls", ids.numpy().astype(np.int32))
        self.assertEqual(got.shape, (4, 3))
        self.assertLess(peak_error(got, want), 1e-4)
        labels = torch.tensor([0, 2, 1, 2])
        self.check_step("bert-cls", model, ids, labels, torch.nn.functional.cross_entropy,
                        mask=mask)

    def test_config_fields_it_does_not_implement_are_refused_by_name(self):
        gpt2 = state(randomized(GPT2LMHeadModel(GPT2), 5))
        bert = state(randomized(BertModel(BERT), 5))
        cases = [(GPT2, gpt2, {"scale_attn_by_inverse_layer_idx": True},
                  "scale_attn_by_inverse_layer_idx"),
                 (GPT2, gpt2, {"activation_function": "quick_gelu"}, "quick_gelu"),
                 (GPT2, gpt2, {"n_ctx": 64}, "n_ctx"),
                 (BERT, bert, {"position_embedding_type": "relative_key"}, "relative_key"),
                 (BERT, bert, {"architectures": ["BertForMaskedLM"]}, "BertForMaskedLM"),
                 (BERT, bert, {"is_decoder": True}, "is_decoder")]
        for config, tensors, change, part in cases:
            with self.assertRaises(qtrain.QtrainError) as e:
                self.import_dir("refused", dict(config, **change), tensors, seq_len=8)
            self.assertIn(part, str(e.exception))
        extra = dict(gpt2, **{"transformer.h.0.attn.c_attn.scale": np.ones(3, np.float32)})
        with self.assertRaises(qtrain.QtrainError) as e:
            self.import_dir("refused", GPT2, extra, seq_len=8)
        self.assertIn("not used by the model: transformer.h.0.attn.c_attn.scale",
                      str(e.exception))


if __name__ == "__main__":
    unittest.main()
