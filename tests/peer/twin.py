"""The PyTorch twin of reckon's model (model/transformer.h), parameter for parameter under the same state-dict
names, built from a checkpoint's config lines (model/config.h config_overrides):

  x = tok_emb[tokens] (+ pos_emb[:T])
  per layer:  x = x + wo · attention(wq·n, wk·n, wv·n),  n = rmsnorm(x)        (causal, 1/sqrt(d_k) scale;
              num_kv_heads K/V heads shared by groups of query heads, repeated as Hugging Face's repeat_kv;
              heads head_dim wide: q is D → H·head_dim, k and v D → KV·head_dim, o H·head_dim → D;
              position = rope: q and k rotated as Hugging Face's LLaMA, apply_rotary_pos_emb with rotate_half,
              cos/sin from rope_theta (and rope_scaling: linear, llama3) computed in float32 as its rotary module does;
              attn_logit_softcapping c: scores → c·tanh(scores / c) before the mask, as Hugging Face's eager Gemma-2;
              position = alibi: scores + slope_h·(j − (T − 1)), Hugging Face's MPT (build_mpt_alibi_tensor,
              gen_slopes in float32; reckon adds slope_h·(j − i): the same after the softmax, a constant per row);
              sliding_window W: key j masked for query i when i − j ≥ W, on every layer or, with
              sliding_window_pattern p ≥ 2, on the layers l with (l + 1) % p ≠ 0)
              x = x + w2 · (act(w1·n) ⊙ w3·n)   or   w2 · act(w1·n)     (gated: swiglu, geglu, geglu_tanh / plain:
              silu_mlp, gelu_mlp, gelu_tanh_mlp; act = F.silu, F.gelu, F.gelu(approximate="tanh")), n = rmsnorm(x)
  logits = lm_head · rmsnorm(x)   (lm_head = tok_emb when tied; final_logit_softcapping c: c·tanh(logits / c));
  loss = mean cross-entropy
block = parallel: x = x + attention(n) + ffn(n) from one n = norm(x), as Hugging Face's Falcon (parallel_attn).
norm_placement = post: x = x + norm(f(x)) (OLMo-2); sandwich: x = x + norm(f(norm(x))) (Gemma-2);
qk_norm: q = rmsnorm(wq·n), k = rmsnorm(wk·n) over the whole projections before RoPE (Olmo2Attention's q_norm,
k_norm). norm_unit_offset: RMSNorm scales by 1 + w (Gemma2RMSNorm); scale_embeddings: x = tok_emb[tokens] · √D (Gemma).
RMSNorm: x / sqrt(mean(x²) + eps) · g; norm = layernorm: F.layer_norm (with β when norm_bias). Biases only where attention_bias puts them (qkv: q, k, v as Qwen2; qkvo: and
o) and mlp_bias (w1, w3, w2); no dropout.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """nn.LayerNorm, with its bias optional (PyTorch 1.13's nn.LayerNorm always has one): F.layer_norm in float32."""

    def __init__(self, d, eps, bias):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight, self.bias, self.eps)


def make_norm(cfg, d):
    eps = float(cfg.get("norm_eps", cfg.get("rmsnorm_eps", "1e-5")))
    if cfg.get("norm", "rmsnorm") == "layernorm":
        return LayerNorm(d, eps, cfg.get("norm_bias", "false") == "true")
    return RMSNorm(d, eps, cfg.get("norm_unit_offset", "false") == "true")


class RMSNorm(nn.Module):
    """unit_offset: Hugging Face's Gemma2RMSNorm, x̂ · (1 + w) in float32."""

    def __init__(self, d, eps, unit_offset=False):
        super().__init__()
        self.eps, self.unit_offset = eps, unit_offset
        self.weight = nn.Parameter(torch.zeros(d) if unit_offset else torch.ones(d))

    def forward(self, x):
        x = x.float()
        gain = 1.0 + self.weight.float() if self.unit_offset else self.weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * gain


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_inv_freq(head_dim, cfg):
    """Hugging Face's modeling_rope_utils: the default frequencies, linear (divided by factor) or llama3."""
    inv_freq = 1.0 / (float(cfg["rope_theta"]) ** (torch.arange(0, head_dim, 2).float() / head_dim))
    kind = cfg.get("rope_scaling", "none")
    factor = float(cfg.get("rope_factor", "1"))
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = float(cfg["rope_low_freq_factor"]), float(cfg["rope_high_freq_factor"])
        old = float(cfg["rope_original_max_position"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        return torch.where(medium, blended, scaled)
    return inv_freq


def alibi_slopes(heads, bias_max):
    """Hugging Face's MPT gen_slopes: 2^(−bias_max·k / P), k = 1 … P (P: heads rounded up to a power of two),
    the even k first when P ≠ heads."""
    p = 2 ** math.ceil(math.log2(heads))
    m = torch.arange(1, p + 1, dtype=torch.float32) * (bias_max / p)
    slopes = 1.0 / torch.pow(2, m)
    if p != heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:heads]
    return slopes


def rope_cos_sin(t, head_dim, inv_freq):
    freqs = torch.outer(torch.arange(t).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads, head_dim, rope_inv_freq=None, window=0, softcap=0.0, bias="none",
                 qk_norms=None, alibi=None):
        super().__init__()
        self.alibi = alibi  # the heads' ALiBi slopes, or None
        self.qk_norm = qk_norms is not None
        if self.qk_norm:
            self.q_norm, self.k_norm = qk_norms
        self.heads, self.kv_heads, self.head_dim, self.rope_inv_freq = heads, kv_heads, head_dim, rope_inv_freq
        self.window, self.softcap = window, softcap
        qkv, o = bias != "none", bias == "qkvo"
        self.wq = nn.Linear(d, heads * head_dim, bias=qkv)
        self.wk = nn.Linear(d, kv_heads * head_dim, bias=qkv)
        self.wv = nn.Linear(d, kv_heads * head_dim, bias=qkv)
        self.wo = nn.Linear(heads * head_dim, d, bias=o)

    def qk(self, q, k):  # qk_norm: OLMo-2's RMSNorm over the whole projections, before the rotation
        return (self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)) if self.qk_norm else (q, k)

    def forward(self, h):
        b, t, _ = h.shape
        dk, group = self.head_dim, self.heads // self.kv_heads
        q, k = self.qk(self.wq(h), self.wk(h))
        q = q.view(b, t, self.heads, dk).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, dk).transpose(1, 2)
        if self.rope_inv_freq is not None:
            cos, sin = rope_cos_sin(t, dk, self.rope_inv_freq)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(group, dim=1)
        v = self.wv(h).view(b, t, self.kv_heads, dk).transpose(1, 2).repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dk))
        if self.softcap > 0:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if self.alibi is not None:  # float32 (1, H, 1, T), as MPT's; bf16 scores are promoted by the add
            scores = scores + torch.arange(1 - t, 1, dtype=torch.int32).view(1, 1, 1, t) * self.alibi.view(1, -1, 1, 1)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        if self.window > 0:
            mask = mask | torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-self.window)
        probs = F.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        return self.wo((probs @ v).transpose(1, 2).reshape(b, t, self.heads * dk))


ACTIVATIONS = {"swiglu": F.silu, "silu_mlp": F.silu, "geglu": F.gelu, "gelu_mlp": F.gelu,
               "geglu_tanh": lambda x: F.gelu(x, approximate="tanh"),
               "gelu_tanh_mlp": lambda x: F.gelu(x, approximate="tanh")}


class Ffn(nn.Module):
    def __init__(self, d, d_ff, kind, bias):
        super().__init__()
        self.gated = kind in ("swiglu", "geglu", "geglu_tanh")
        self.act = ACTIVATIONS[kind]
        self.w1 = nn.Linear(d, d_ff, bias=bias)
        if self.gated:
            self.w3 = nn.Linear(d, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d, bias=bias)

    def forward(self, h):
        a = self.act(self.w1(h))
        return self.w2(a * self.w3(h) if self.gated else a)


class Layer(nn.Module):
    def __init__(self, cfg, d, heads, kv_heads, head_dim, d_ff, ffn, rope_inv_freq=None, window=0, softcap=0.0,
                 bias="none", mlp_bias=False, alibi=None):
        super().__init__()
        self.attn_norm = make_norm(cfg, d)
        qk_norms = ((make_norm(cfg, heads * head_dim), make_norm(cfg, kv_heads * head_dim))
                    if cfg.get("qk_norm", "false") == "true" else None)
        self.attn = Attention(d, heads, kv_heads, head_dim, rope_inv_freq, window, softcap, bias, qk_norms, alibi)
        self.parallel = cfg.get("block", "sequential") == "parallel"
        placement = cfg.get("norm_placement", "pre")
        self.pre, self.post = placement != "post", placement != "pre"
        if not self.pre:
            del self.attn_norm
        if not self.parallel and self.pre:
            self.ffn_norm = make_norm(cfg, d)
        self.ffn = Ffn(d, d_ff, ffn, mlp_bias)
        if self.post:  # Hugging Face's OLMo-2 post_attention_layernorm / post_feedforward_layernorm, Gemma-2's too
            self.attn_post_norm = make_norm(cfg, d)
            self.ffn_post_norm = make_norm(cfg, d)

    def forward(self, x):
        if self.parallel:  # Hugging Face's Falcon (parallel_attn): mlp(n) + attention(n) + x, one n = norm(x)
            n = self.attn_norm(x)
            return self.ffn(n).float() + self.attn(n).float() + x
        a = self.attn(self.attn_norm(x) if self.pre else x).float()
        x = x + (self.attn_post_norm(a) if self.post else a)
        f = self.ffn(self.ffn_norm(x) if self.pre else x).float()
        return x + (self.ffn_post_norm(f) if self.post else f)


class ReckonTwin(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        v, t, d = int(cfg["vocab_size"]), int(cfg["context_length"]), int(cfg["d_model"])
        self.tied = cfg["tie_embeddings"] == "true"
        self.tok_emb = nn.Embedding(v, d)
        self.normalizer = torch.tensor(d ** 0.5, dtype=torch.float32) if cfg.get("scale_embeddings") == "true" else None
        if cfg["position"] == "learned":
            self.pos_emb = nn.Embedding(t, d)
        heads = int(cfg["num_heads"])
        kv_heads = int(cfg.get("num_kv_heads", "0")) or heads  # 0: as many as the query heads
        head_dim = int(cfg.get("head_dim", "0")) or d // heads  # 0: d_model / num_heads
        inv_freq = rope_inv_freq(head_dim, cfg) if cfg["position"] == "rope" else None
        alibi = (alibi_slopes(heads, float(cfg.get("alibi_bias_max", "8"))) if cfg["position"] == "alibi" else None)
        window, pattern = int(cfg.get("sliding_window", "0")), int(cfg.get("sliding_window_pattern", "0"))
        softcap = float(cfg.get("attn_logit_softcapping", "0"))
        self.logit_cap = float(cfg.get("final_logit_softcapping", "0"))

        def layer_window(l):  # every p-th layer global (Hugging Face's sliding_window_pattern)
            return 0 if pattern >= 2 and (l + 1) % pattern == 0 else window

        self.layers = nn.ModuleList(Layer(cfg, d, heads, kv_heads, head_dim, int(cfg["d_ff"]), cfg["ffn"],
                                          inv_freq, layer_window(l), softcap, cfg.get("attention_bias", "none"),
                                          cfg.get("mlp_bias", "false") == "true", alibi)
                                    for l in range(int(cfg["num_layers"])))
        self.final_norm = make_norm(cfg, d)
        if not self.tied:
            self.lm_head = nn.Linear(d, v, bias=False)

    def forward(self, tokens, targets):
        x = self.tok_emb(tokens)
        if self.normalizer is not None:  # Gemma: hidden_size ** 0.5 in the activations' dtype
            x = x * self.normalizer
        if hasattr(self, "pos_emb"):
            x = x + self.pos_emb.weight[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        h = self.final_norm(x)
        logits = (F.linear(h, self.tok_emb.weight) if self.tied else self.lm_head(h)).float()
        if self.logit_cap > 0:
            logits = torch.tanh(logits / self.logit_cap) * self.logit_cap
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
