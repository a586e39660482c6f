#!/usr/bin/python3
"""An outside referee: reckon's step against PyTorch's (Debian python3-torch 1.13) on the same weights and batch.

  1. reckon trains a few steps and saves a checkpoint (BEFORE),
  2. reckon resumes it for one step, dumping that step's gradients and batch (GRADS) and saving (AFTER),
  3. this script loads BEFORE into the PyTorch twin of reckon's model (twin.py), runs the batch from GRADS, and
     compares the loss, every parameter's gradient, and the parameters after one torch.optim.AdamW step
     (its state loaded from BEFORE: exp_avg, exp_avg_sq, step) with AFTER.

fp32 tolerances (the issue's): loss relative error <= 1e-6, each gradient relative L2 <= 1e-5, each parameter
after the step relative L2 <= 1e-6. amp-bf16 against torch.autocast("cpu", bfloat16): the two differ in where
they round (docs/conventions.md "Mixed precision": PyTorch CPU casts the norm output three times and keeps
q/k/v, probs and the gate output as its kernels choose), so each bf16 rounding (u = 2^-8) may land on either
side: loss within 1e-2 relative, gradients within 0.1 relative L2 (about 20 roundings deep in tiny, each at
most u relative, plus cancellation in the small ones), parameters after the step within 5e-3 relative L2 (one
AdamW step moves a weight by at most about lr = 1e-3, i.e. 5% of tiny's 0.02-scale weights; a gradient 10% off
changes that step by at most 10% of it: 5e-3). Measured: about 1e-5, 8e-3 and 6e-4.
Biases start at zero (Hugging Face's init), so a few steps in they are the size of a few AdamW updates and the
parameter check above would compare updates to updates: they are checked against the step instead — the two sides'
updates agree within the gradient tolerance, relative L2 of the update (Adam's m̂ / √v̂ moves by about the
gradient's relative error; measured: 4e-7 and 7e-3). k's bias is the exception: softmax is blind to a shift of every score of a row, so its
gradient is exactly zero without RoPE (and small with it) and what each side computes is its own rounding: its
gradient is checked against the scale of the same layer's q-bias gradient, and its update (Adam turns rounding noise
into steps of ±lr) is not compared.
A CPU without bf16 matmuls (reckon exits 2 saying so) skips the amp check (exit 77).

usage: cross_check.py path/to/reckon workdir [fp32|amp-bf16] [key=value ...]   (extra --set fields for tiny, e.g.
       num_kv_heads=2 head_dim=24: grouped-query attention with heads apart from d_model / num_heads)
"""
import hashlib
import json
import math
import os
import struct
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twin import ReckonTwin  # noqa: E402


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "I32": torch.int32}
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=dtypes[e["dtype"]]) if end > begin else torch.empty(0, dtype=dtypes[e["dtype"]])
        tensors[name] = t.reshape(e["shape"]).clone()
    return tensors, meta


def config_of(meta):
    cfg = {}
    for line in meta["config"].splitlines():
        if line:
            k, v = line.split("=", 1)
            cfg[k] = v
    return cfg


def grad_error(name, params, reckon_grad):
    """Relative L2 error of reckon's gradient of parameter `name` against torch's (params: named parameters with
    .grad). attn.wk.bias's gradient is structurally ~0 (a key bias shifts every score of a query by the same amount,
    which the softmax cancels; only rounding and RoPE leave anything): measured against the q bias gradient's scale."""
    p = params[name]
    if name.endswith("attn.wk.bias"):
        scale = params[name.replace("wk.bias", "wq.bias")].grad.double().norm().item()
        diff = (p.grad.double() - reckon_grad.double()).norm().item()
        return diff / max(scale, p.grad.double().norm().item())
    return rel(p.grad, reckon_grad.float())


def rel(a, b):
    a, b = a.double(), b.double()
    return (a - b).norm().item() / max(b.norm().item(), 1e-30)


def main():
    reckon, work = os.path.abspath(sys.argv[1]), sys.argv[2]
    precision = sys.argv[3] if len(sys.argv) > 3 else "fp32"
    extra = [a for kv in sys.argv[4:] for a in ("--set", kv)]
    tag = precision + "".join("_" + kv.replace("=", "") for kv in sys.argv[4:])
    if len(tag) > 96:  # file names stay under the 255-byte limit; the digest keeps long tags apart
        tag = tag[:80] + "_" + hashlib.sha1(tag.encode()).hexdigest()[:12]
    os.makedirs(work, exist_ok=True)
    before, grads_path, after = (os.path.join(work, f"{tag}_{n}.safetensors") for n in ("before", "grads", "after"))
    common = ["--threads", "2", "--quiet", "--data", "random"]
    first = subprocess.run([reckon, "train", "--preset", "tiny", "--steps", "3", "--set", "precision=" + precision,
                            "--set", "position=learned"] + extra + ["--save", before] + common, capture_output=True,
                           text=True)
    if first.returncode == 2 and "cannot run bf16 matmuls" in first.stderr:
        print("cross_check: skipped: " + first.stderr.strip())
        sys.exit(77)
    assert first.returncode == 0, first.stdout + first.stderr
    subprocess.run([reckon, "train", "--resume", before, "--steps", "1", "--dump-grads", grads_path, "--save", after]
                   + common, check=True, capture_output=True)

    state, meta = read_safetensors(before)
    dumped, dmeta = read_safetensors(grads_path)
    stepped, _ = read_safetensors(after)
    cfg = config_of(meta)
    torch.set_num_threads(2)
    model = ReckonTwin(cfg)
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(state[n].float())
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), betas=(float(cfg["beta1"]), float(cfg["beta2"])),
                            eps=float(cfg["adam_eps"]), weight_decay=float(cfg["weight_decay"]))
    steps_done = int(meta["optimizer_steps"])
    opt.state_dict()  # state is created lazily; load it through load_state_dict as PyTorch would from a checkpoint
    sd = opt.state_dict()
    sd["state"] = {i: {"step": torch.tensor(float(steps_done)), "exp_avg": state[n + ".exp_avg"].clone(),
                       "exp_avg_sq": state[n + ".exp_avg_sq"].clone()} for i, n in enumerate(names)}
    opt.load_state_dict(sd)

    tokens = dumped["batch.tokens"].long()
    targets = dumped["batch.targets"].long()
    opt.zero_grad()
    if precision == "amp-bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(tokens, targets)
    else:
        loss = model(tokens, targets)
    loss.backward()
    reckon_loss = float(dmeta["loss"])
    tol = {"fp32": (1e-6, 1e-5, 1e-6), "amp-bf16": (1e-2, 0.1, 5e-3)}[precision]
    failures = []
    loss_err = abs(loss.item() - reckon_loss) / abs(reckon_loss)
    print(f"cross_check {tag}: loss reckon {reckon_loss:.9f} torch {loss.item():.9f} rel {loss_err:.2e} (<= {tol[0]:g})")
    if not loss_err <= tol[0]:
        failures.append("loss")
    worst = (0.0, "")
    grads = dict(model.named_parameters())
    for n in grads:
        e = grad_error(n, grads, dumped[n])
        worst = max(worst, (e, n))
        if not e <= tol[1]:
            failures.append("grad " + n)
    print(f"cross_check {tag}: gradients, worst relative L2 {worst[0]:.2e} ({worst[1]}) (<= {tol[1]:g}), "
          f"{len(names)} parameters")
    opt.step()
    worst, worst_bias = (0.0, ""), (0.0, "")
    for n, p in model.named_parameters():
        if n.endswith("attn.wk.bias"):
            continue
        if n.endswith(".bias"):  # against the update (see above)
            e = rel(stepped[n].float() - state[n].float(), p.detach() - state[n].float())
            worst_bias = max(worst_bias, (e, n))
            if not e <= tol[1]:
                failures.append("update " + n)
            continue
        e = rel(p.detach(), stepped[n].float())
        worst = max(worst, (e, n))
        if not e <= tol[2]:
            failures.append("param " + n)
    print(f"cross_check {tag}: parameters after one AdamW step, worst relative L2 {worst[0]:.2e} ({worst[1]}) "
          f"(<= {tol[2]:g})")
    if worst_bias[1]:
        print(f"cross_check {tag}: bias updates, worst relative L2 {worst_bias[0]:.2e} ({worst_bias[1]}) "
              f"(<= {tol[1]:g})")
    if failures:
        print("cross_check: FAILED: " + ", ".join(failures[:10]))
        sys.exit(1)
    print("cross_check: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
