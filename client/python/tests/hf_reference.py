"""A PyTorch reference of Hugging Face's Llama-family decoder (LlamaForCausalLM; Qwen2 and Mistral
are the same graph with other bias / window settings), written from the equations in
shared/docs/models.md and transformers' modeling_llama.py — not from qtrain. Parameters carry HF's
names and layouts ((out, in) linear weights), so a state dict of this module is what a
`model.safetensors` of that architecture holds. Used by test_hf_llama.py."""

import math

import numpy as np
import torch
from torch import nn


def rope_inv_freq(head_dim, theta, scaling=None):
    """transformers' ROPE_INIT_FUNCTIONS: default, linear and llama3, in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv_freq
    if scaling["rope_type"] == "linear":
        return inv_freq / scaling["factor"]
    assert scaling["rope_type"] == "llama3"
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * llama / factor + smooth * llama
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, llama)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.heads, self.kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or d // self.heads
        qwen2 = c.get("model_type") == "qwen2"  # Qwen2Attention: q/k/v biases, no o bias
        qkv_bias = qwen2 or c.get("attention_bias", False)
        out_bias = not qwen2 and c.get("attention_bias", False)
        self.q_proj = nn.Linear(d, self.heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.kv * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.kv * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, d, bias=out_bias)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        group = self.heads // self.kv  # repeat_kv
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)
        causal = torch.full((t, t), torch.finfo(scores.dtype).min, dtype=scores.dtype).triu(1)
        attn = torch.softmax(scores + causal, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, bias = c["hidden_size"], c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj, self.up_proj = nn.Linear(d, h, bias=bias), nn.Linear(d, h, bias=bias)
        self.down_proj = nn.Linear(h, d, bias=bias)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    """Logits (N, T, vocab) of token ids (N, T), positions 0..T−1, causal attention."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Decoder(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c.get("tie_word_embeddings"):  # one tensor: the output layer reads the embedding table
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids):
        c = self.config
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        inv_freq = rope_inv_freq(head_dim, c.get("rope_theta", 10000.0), c.get("rope_scaling"))
        angles = torch.arange(ids.shape[1]).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        dtype = self.lm_head.weight.dtype
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))


class Conv1D(nn.Module):
    """transformers' Conv1D: a linear layer whose weight is stored (in, out)."""

    def __init__(self, out_features, in_features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features) * 0.02)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        return x @ self.weight + self.bias


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def key_mask(mask, dtype):
    """HF's extended attention mask: 0 where attended, the dtype's minimum on padded keys."""
    if mask is None:
        return 0
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["n_embd"]
        self.heads = c["n_head"]
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        dh = d // self.heads
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, dh).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        scores = torch.where(causal, scores, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores + key_mask(mask, scores.dtype), dim=-1)
        return self.c_proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["n_embd"], c.get("layer_norm_epsilon", 1e-5)
        self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.attn = GPT2Attention(c)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(c.get("n_inner") or 4 * d, d)
        self.mlp.c_proj = Conv1D(d, c.get("n_inner") or 4 * d)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp.c_proj(gelu_new(self.mlp.c_fc(self.ln_2(x))))


class GPT2LMHeadModel(nn.Module):
    """GPT-2 as transformers' modeling_gpt2: logits (N, T, vocab); lm_head tied to wte unless the
    config says tie_word_embeddings false. `mask` (N, T): 1 for tokens, 0 for padding."""

    def __init__(self, c):
        super().__init__()
        d = c["n_embd"]
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(c["vocab_size"], d)
        self.transformer.wpe = nn.Embedding(c["n_positions"], d)
        self.transformer.h = nn.ModuleList(GPT2Block(c) for _ in range(c["n_layer"]))
        self.transformer.ln_f = nn.LayerNorm(d, eps=c.get("layer_norm_epsilon", 1e-5))
        self.lm_head = nn.Linear(d, c["vocab_size"], bias=False)
        if c.get("tie_word_embeddings", True):
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, ids, mask=None):
        tr = self.transformer
        x = tr.wte(ids) + tr.wpe(torch.arange(ids.shape[1]))
        for block in tr.h:
            x = block(x, mask)
        return self.lm_head(tr.ln_f(x))


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, ff, eps = c["hidden_size"], c["intermediate_size"], c.get("layer_norm_eps", 1e-12)
        self.heads = c["num_attention_heads"]
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ff)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ff, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x, mask):
        b, t, d = x.shape
        dh = d // self.heads
        s = self.attention.self
        q, k, v = (f(x).view(b, t, self.heads, dh).transpose(1, 2)
                   for f in (s.query, s.key, s.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + key_mask(mask, x.dtype)
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        out = self.attention.output
        h = out.LayerNorm(out.dense(ctx) + x)
        y = self.output.dense(nn.functional.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(y + h)


class BertModel(nn.Module):
    """BERT as transformers' modeling_bert: the last hidden state (N, T, hidden) of token ids
    with token_type_ids 0 and positions 0..T−1; `mask` (N, T) is the attention_mask."""

    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(c["vocab_size"], d)
        self.embeddings.position_embeddings = nn.Embedding(c["max_position_embeddings"], d)
        self.embeddings.token_type_embeddings = nn.Embedding(c.get("type_vocab_size", 2), d)
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=c.get("layer_norm_eps", 1e-12))
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(BertLayer(c) for _ in range(c["num_hidden_layers"]))
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(d, d)

    def forward(self, ids, mask=None):
        e = self.embeddings
        x = e.word_embeddings(ids) + e.position_embeddings(torch.arange(ids.shape[1])) \
            + e.token_type_embeddings(torch.zeros_like(ids))
        x = e.LayerNorm(x)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

    def pooled(self, hidden):
        return torch.tanh(self.pooler.dense(hidden[:, 0]))


class BertForSequenceClassification(nn.Module):
    """Logits (N, num_labels): classifier(pooler(bert(ids)))."""

    def __init__(self, c):
        super().__init__()
        self.bert = BertModel(c)
        self.classifier = nn.Linear(c["hidden_size"], len(c.get("id2label", {0: 0, 1: 1})))

    def forward(self, ids, mask=None):
        return self.classifier(self.bert.pooled(self.bert(ids, mask)))


def assert_sgd_step(case, arrays, ref, name_of, lr):
    """Every parameter of float64 `ref`, after backward, took one SGD step of `lr` in the session's
    checkpoint `arrays` (within 1e-4 of the step), and the checkpoint holds no other parameter.
    `name_of(hf_name, tensor)` gives the checkpoint key and the array in qtrain's layout."""
    for pname, p in ref.named_parameters():
        key, before = name_of(pname, p.float())
        _, want = name_of(pname, (p - lr * p.grad).float())
        step_size = lr * float(p.grad.abs().max())
        case.assertLess(float(np.abs(arrays[key] - want).max()), 1e-4 * step_size + 1e-7, pname)
        case.assertGreater(float(np.abs(arrays[key] - before).max()), 0, pname)
    case.assertEqual(len([k for k in arrays if k.startswith("params/")]),
                     len(list(ref.parameters())))
