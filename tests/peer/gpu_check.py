#!/usr/bin/env python3
"""A GPU referee for reckon's predicted step (estimators/gpu_step.h), for users who have a GPU: the PyTorch twin of
reckon's model (tests/peer/twin.py, parameter for parameter) trains a few configs on the GPU — bf16 autocast,
scaled_dot_product_attention (FlashAttention where PyTorch picks it), fused AdamW, with and without activation
checkpointing — and each step, timed with CUDA events after warm-up, and torch.cuda.max_memory_allocated are printed
beside `reckon estimate --gpu <this GPU> … --json`'s prediction, with the error.

    /usr/bin/python3 tests/peer/gpu_check.py build/reckon            # exits 0 with "skipped: no CUDA" without one
    /usr/bin/python3 tests/peer/gpu_check.py build/reckon --dry-run  # the same flow on the CPU at toy sizes

Needs PyTorch ≥ 2 and CUDA for the timed run (the whole run takes a few minutes on one H100 / H200); the dry run
checks the script's own plumbing anywhere (PyTorch 1.13 on the CPU: the twin's own attention instead of SDPA).
Memory: reckon's predicted peak counts what its own step holds (docs/conventions.md); PyTorch's caching allocator and
CUDA context are outside it, so the memory column is a comparison, not a reconciliation.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402

# name fragment of torch.cuda.get_device_name → reckon's --gpu
GPUS = [("H200", "h200"), ("H100", "h100-sxm"), ("B200", "b200"), ("MI300X", "mi300x"), ("A100-SXM4-80GB", "a100-80gb"),
        ("A100 80GB", "a100-80gb"), ("A100", "a100-40gb")]

# LLaMA-style configs (RMSNorm, SwiGLU, RoPE, untied), small enough for one GPU in minutes.
CASES = [
    # name, overrides, batch, recompute
    ("llama 125M, T 1024", {"num_layers": 12, "d_model": 768, "num_heads": 12, "d_ff": 2048, "context_length": 1024,
                            "vocab_size": 32000}, 8, "none"),
    ("llama 350M, T 2048", {"num_layers": 24, "d_model": 1024, "num_heads": 16, "d_ff": 2816, "context_length": 2048,
                            "vocab_size": 32000}, 4, "none"),
    ("llama 350M, T 2048, full recompute", {"num_layers": 24, "d_model": 1024, "num_heads": 16, "d_ff": 2816,
                                            "context_length": 2048, "vocab_size": 32000}, 4, "full"),
    ("llama 1.3B, T 2048", {"num_layers": 24, "d_model": 2048, "num_heads": 16, "d_ff": 5504, "context_length": 2048,
                            "vocab_size": 32000}, 2, "none"),
]
DRY_CASES = [("toy, T 64", {"num_layers": 2, "d_model": 64, "num_heads": 4, "d_ff": 128, "context_length": 64,
                            "vocab_size": 256}, 2, "none"),
             ("toy, T 64, full recompute", {"num_layers": 2, "d_model": 64, "num_heads": 4, "d_ff": 128,
                                            "context_length": 64, "vocab_size": 256}, 2, "full")]


def default_config_lines(reckon):
    """Every config field of a LLaMA-style model as reckon writes them (a checkpoint's metadata)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.safetensors")
        subprocess.run([reckon, "train", "--preset", "tiny", "--steps", "1", "--quiet", "--data", "random", "--save",
                        path, "--set", "position=rope"], check=True, capture_output=True)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            meta = json.loads(f.read(n))["__metadata__"]
    return dict(line.split("=", 1) for line in meta["config"].splitlines() if line)


def sdpa_forward(self, h):
    """twin.Attention's forward with scaled_dot_product_attention (causal; no window, soft-cap or ALiBi here)."""
    b, t, _ = h.shape
    dk, group = self.head_dim, self.heads // self.kv_heads
    q = self.wq(h).view(b, t, self.heads, dk).transpose(1, 2)
    k = self.wk(h).view(b, t, self.kv_heads, dk).transpose(1, 2)
    cos, sin = twin.rope_cos_sin(t, dk, self.rope_inv_freq.to(h.device))
    cos, sin = cos.to(h.device), sin.to(h.device)
    q, k = q * cos + twin.rotate_half(q) * sin, k * cos + twin.rotate_half(k) * sin
    k = k.repeat_interleave(group, dim=1)
    v = self.wv(h).view(b, t, self.kv_heads, dk).transpose(1, 2).repeat_interleave(group, dim=1)
    o = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, is_causal=True)
    return self.wo(o.transpose(1, 2).reshape(b, t, self.heads * dk))


def measure(cfg, batch, recompute, device, steps, warmup):
    """Mean step seconds and peak allocated bytes of the twin on `device` (bf16 autocast, fused AdamW on CUDA)."""
    model = twin.ReckonTwin(cfg).to(device)
    if hasattr(F, "scaled_dot_product_attention"):
        for layer in model.layers:
            layer.attn.forward = sdpa_forward.__get__(layer.attn)
    if recompute == "full":
        from torch.utils.checkpoint import checkpoint
        for layer in model.layers:
            inner = layer.forward
            layer.forward = (lambda f: lambda x: checkpoint(f, x, use_reentrant=False))(inner)
    fused = {"fused": True} if device == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    v, t = int(cfg["vocab_size"]), int(cfg["context_length"])
    tokens = torch.randint(0, v, (batch, t), device=device)
    targets = torch.randint(0, v, (batch, t), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(tokens, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / steps, torch.cuda.max_memory_allocated()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, 0


def predict(reckon, cfg, batch, recompute, gpu):
    args = [reckon, "estimate"]
    for key, value in cfg.items():
        args += ["--set", f"{key}={value}"]
    args += ["--set", "precision=amp-bf16", "--set", "attention=flash", "--set", f"recompute={recompute}", "--set",
             f"batch_size={batch}", "--gpu", gpu, "--json", "/dev/stdout"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    j, _ = json.JSONDecoder().raw_decode(out[out.index("{"):])
    return j["gpu_step"]["seconds"], j["memory"]["peak_bytes"]


def main():
    reckon = sys.argv[1]
    dry = "--dry-run" in sys.argv[2:]
    if not dry and not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA")
        return 0
    if dry:
        device, gpu, cases, steps, warmup = "cpu", "h100-sxm", DRY_CASES, 2, 1
    else:
        name = torch.cuda.get_device_name()
        gpu = next((g for fragment, g in GPUS if fragment in name), None)
        if gpu is None:
            print(f"gpu_check: skipped: '{name}' is not one of reckon's GPUs ({', '.join(g for _, g in GPUS)})")
            return 0
        if not hasattr(F, "scaled_dot_product_attention"):
            print(f"gpu_check: skipped: PyTorch {torch.__version__} has no scaled_dot_product_attention (needs ≥ 2)")
            return 0
        device, cases, steps, warmup = "cuda", CASES, 10, 3
    base = default_config_lines(reckon)
    print(f"gpu_check: {'dry run on the CPU (no timing meaning)' if dry else torch.cuda.get_device_name()} as "
          f"reckon's {gpu}; PyTorch {torch.__version__}")
    print("| case | batch | recompute | measured ms | predicted ms | error | measured peak GB | predicted peak GB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for label, overrides, batch, recompute in cases:
        cfg = dict(base, **{k: str(v) for k, v in overrides.items()})
        cfg.update({"position": "rope", "num_kv_heads": "0", "head_dim": "0", "batch_size": str(batch)})
        seconds, peak = measure(cfg, batch, recompute, device, steps, warmup)
        predicted, predicted_peak = predict(reckon, cfg, batch, recompute, gpu)
        print(f"| {label} | {batch} | {recompute} | {seconds * 1e3:.2f} | {predicted * 1e3:.2f} | "
              f"{100 * (predicted / seconds - 1):+.1f}% | {peak / 1e9:.2f} | {predicted_peak / 1e9:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
