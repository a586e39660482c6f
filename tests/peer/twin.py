"""The PyTorch twin of reckon's model (model/transformer.h), parameter for parameter under the same state-dict
names, built from a checkpoint's config lines (model/config.h config_overrides):

  x = tok_emb[tokens] (+ pos_emb[:T])
  per layer:  x = x + wo · attention(wq·n, wk·n, wv·n),  n = rmsnorm(x)        (causal, 1/sqrt(d_k) scale)
              x = x + w2 · (silu(w1·n) ⊙ w3·n)   or   w2 · silu(w1·n)           (swiglu / silu_mlp), n = rmsnorm(x)
  logits = lm_head · rmsnorm(x)   (lm_head = tok_emb when tied);   loss = mean cross-entropy
RMSNorm: x / sqrt(mean(x²) + eps) · g. No biases, no dropout.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, h):
        b, t, d = h.shape
        dk = d // self.heads
        q = self.wq(h).view(b, t, self.heads, dk).transpose(1, 2)
        k = self.wk(h).view(b, t, self.heads, dk).transpose(1, 2)
        v = self.wv(h).view(b, t, self.heads, dk).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dk))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        probs = F.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        return self.wo((probs @ v).transpose(1, 2).reshape(b, t, d))


class Ffn(nn.Module):
    def __init__(self, d, d_ff, swiglu):
        super().__init__()
        self.swiglu = swiglu
        self.w1 = nn.Linear(d, d_ff, bias=False)
        if swiglu:
            self.w3 = nn.Linear(d, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d, bias=False)

    def forward(self, h):
        a = F.silu(self.w1(h))
        return self.w2(a * self.w3(h) if self.swiglu else a)


class Layer(nn.Module):
    def __init__(self, d, heads, d_ff, swiglu, eps):
        super().__init__()
        self.attn_norm = RMSNorm(d, eps)
        self.attn = Attention(d, heads)
        self.ffn_norm = RMSNorm(d, eps)
        self.ffn = Ffn(d, d_ff, swiglu)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x)).float()
        return x + self.ffn(self.ffn_norm(x)).float()


class ReckonTwin(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t, d = int(cfg["vocab_size"]), int(cfg["context_length"]), int(cfg["d_model"])
        eps = float(cfg["rmsnorm_eps"])
        self.tied = cfg["tie_embeddings"] == "true"
        self.tok_emb = nn.Embedding(v, d)
        if cfg["position"] == "learned":
            self.pos_emb = nn.Embedding(t, d)
        self.layers = nn.ModuleList(Layer(d, int(cfg["num_heads"]), int(cfg["d_ff"]), cfg["ffn"] == "swiglu", eps)
                                    for _ in range(int(cfg["num_layers"])))
        self.final_norm = RMSNorm(d, eps)
        if not self.tied:
            self.lm_head = nn.Linear(d, v, bias=False)

    def forward(self, tokens, targets):
        x = self.tok_emb(tokens)
        if hasattr(self, "pos_emb"):
            x = x + self.pos_emb.weight[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        h = self.final_norm(x)
        logits = F.linear(h, self.tok_emb.weight) if self.tied else self.lm_head(h)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
