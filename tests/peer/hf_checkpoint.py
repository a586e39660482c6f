#!/usr/bin/python3
"""Hugging Face-format checkpoints both ways, refereed by PyTorch (Debian python3-torch 1.13; no transformers, no
downloads): the state-dict names and layouts are written out here from transformers' modules, independently of
reckon's model/hf_checkpoint.cpp.

  1. reckon -> HF: reckon trains tiny (with the family's fields) for 2 steps, once saving its own checkpoint and once,
     identically, with --save-format hf. Every tensor of the HF file must equal, bit for bit, the reckon parameters
     this script's table maps to it (GPT-2's Conv1D weights transposed, q, k, v fused into c_attn), and the file must
     hold nothing else; its metadata format is "pt", which transformers requires.
  2. HF -> reckon -> HF: the PyTorch twin (twin.py) of the same config gets random weights, which this script writes as
     a Hugging Face state dict (GPT-2 as the Hub's files are: no "transformer." prefix, with the causal-mask buffers;
     the others with the prefix, Qwen2's in bfloat16 with the tied head's second copy, LLaMA's with rotary inv_freq
     buffers). reckon trains one step --init-from it, dumping the step's loss, gradients and batch and saving the
     result with --save-format hf. The twin, on the same batch from the same weights, must give the same loss and
     gradients (fp32 tolerances of cross_check.py), and torch.optim.AdamW's first step (fresh state, reckon's
     hyperparameters, reckon's gradients) the parameters of the saved file read back through the table.

usage: hf_checkpoint.py path/to/reckon workdir family   (family: gpt2, llama, qwen2, mistral, olmo2, gemma2)
"""
import json
import os
import struct
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cross_check import config_of, grad_error, read_safetensors, rel  # noqa: E402
from twin import ReckonTwin  # noqa: E402

FAMILIES = {
    "gpt2": ["ffn=gelu_tanh_mlp", "mlp_bias=true", "attention_bias=qkvo", "position=learned", "tie_embeddings=true",
             "norm=layernorm", "norm_bias=true"],
    "llama": ["position=rope", "num_kv_heads=2"],
    "qwen2": ["position=rope", "num_kv_heads=2", "attention_bias=qkv", "tie_embeddings=true", "norm_eps=1e-6"],
    "mistral": ["position=rope", "num_kv_heads=1", "sliding_window=8"],
    "olmo2": ["norm_placement=post", "qk_norm=true", "position=rope"],
    "gemma2": ["norm_placement=sandwich", "ffn=geglu_tanh", "position=rope", "num_kv_heads=2", "tie_embeddings=true",
               "norm_unit_offset=true", "scale_embeddings=true", "head_dim=32", "sliding_window=5",
               "sliding_window_pattern=2", "attn_logit_softcapping=20", "final_logit_softcapping=10"],
}


def hf_table(cfg, twin_names):
    """(HF key, [twin parameter names end to end], conv1d) for every tensor of the HF state dict."""
    layers, rows = int(cfg["num_layers"]), []
    if cfg["position"] == "learned":  # GPT2LMHeadModel: Conv1D linears, c_attn = [q | k | v]
        rows += [("transformer.wte.weight", ["tok_emb.weight"], False),
                 ("transformer.wpe.weight", ["pos_emb.weight"], False)]
        for i in range(layers):
            h, r = f"transformer.h.{i}.", f"layers.{i}."
            for kind in ("weight", "bias"):
                rows += [(h + "ln_1." + kind, [r + "attn_norm." + kind], False),
                         (h + "attn.c_attn." + kind, [r + f"attn.w{x}.{kind}" for x in "qkv"], True),
                         (h + "attn.c_proj." + kind, [r + "attn.wo." + kind], True),
                         (h + "ln_2." + kind, [r + "ffn_norm." + kind], False),
                         (h + "mlp.c_fc." + kind, [r + "ffn.w1." + kind], True),
                         (h + "mlp.c_proj." + kind, [r + "ffn.w2." + kind], True)]
        rows += [("transformer.ln_f.weight", ["final_norm.weight"], False),
                 ("transformer.ln_f.bias", ["final_norm.bias"], False)]
    else:  # LlamaForCausalLM and kin: nn.Linear as it is
        placement = cfg.get("norm_placement", "pre")
        rows.append(("model.embed_tokens.weight", ["tok_emb.weight"], False))
        for i in range(layers):
            h, r = f"model.layers.{i}.", f"layers.{i}."
            norms = {"pre": [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")],
                     "post": [("post_attention_layernorm", "attn_post_norm"),
                              ("post_feedforward_layernorm", "ffn_post_norm")],
                     "sandwich": [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "attn_post_norm"),
                                  ("pre_feedforward_layernorm", "ffn_norm"),
                                  ("post_feedforward_layernorm", "ffn_post_norm")]}[placement]
            rows += [(h + hf + ".weight", [r + ours + ".weight"], False) for hf, ours in norms]
            for kind in ("weight", "bias"):
                rows += [(h + f"self_attn.{x}_proj.{kind}", [r + f"attn.w{x}.{kind}"], False) for x in "qkvo"]
                rows += [(h + f"mlp.{hf}_proj.{kind}", [r + f"ffn.{ours}.{kind}"], False)
                         for hf, ours in (("gate", "w1"), ("up", "w3"), ("down", "w2"))]
            rows += [(h + "self_attn.q_norm.weight", [r + "attn.q_norm.weight"], False),
                     (h + "self_attn.k_norm.weight", [r + "attn.k_norm.weight"], False)]
        rows.append(("model.norm.weight", ["final_norm.weight"], False))
    if cfg["tie_embeddings"] != "true":
        rows.append(("lm_head.weight", ["lm_head.weight"], False))
    return [(k, parts, c) for k, parts, c in rows if all(p in twin_names for p in parts)]


def to_hf(table, state):
    out = {}
    for key, parts, conv1d in table:
        t = torch.cat([state[p] for p in parts], 0)
        out[key] = t.t().contiguous() if conv1d and t.dim() == 2 else t.contiguous()
    return out


def from_hf(table, hf, shapes):
    state = {}
    for key, parts, conv1d in table:
        t = hf[key]
        t = t.t() if conv1d and t.dim() == 2 else t
        for p, piece in zip(parts, torch.split(t, [shapes[p][0] for p in parts], 0)):
            state[p] = piece.contiguous()
    return state


def write_safetensors(path, tensors, metadata):
    names = {torch.float32: "F32", torch.bfloat16: "BF16"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for key, t in tensors.items():
        raw = t.contiguous().view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32).numpy().tobytes()
        header[key] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def run(reckon, args):
    r = subprocess.run([reckon] + args, capture_output=True, text=True)
    assert r.returncode == 0, " ".join(args) + "\n" + r.stdout + r.stderr
    return r.stdout


def main():
    reckon, work, family = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    path = lambda n: os.path.join(work, f"hf_{family}_{n}.safetensors")  # noqa: E731
    sets = [a for kv in FAMILIES[family] for a in ("--set", kv)]
    common = ["--threads", "2", "--quiet", "--data", "random"]
    failures = []

    # 1. reckon -> HF, against reckon's own checkpoint of the identical run.
    train = ["train", "--preset", "tiny", "--steps", "2"] + sets + common
    run(reckon, train + ["--save", path("reckon")])
    out = run(reckon, train + ["--save-format", "hf", "--save", path("hf")])
    ours, meta = read_safetensors(path("reckon"))
    hf, hf_meta = read_safetensors(path("hf"))
    cfg = config_of(meta)
    torch.manual_seed(0)
    model = ReckonTwin(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    table = hf_table(cfg, shapes)
    want = to_hf(table, {n: ours[n] for n in shapes})
    if set(want) != set(hf):
        failures.append(f"keys: missing {sorted(set(want) - set(hf))[:4]}, extra {sorted(set(hf) - set(want))[:4]}")
    mismatched = [k for k in want if k in hf and not torch.equal(want[k], hf[k])]
    if mismatched:
        failures.append("tensors differ: " + ", ".join(mismatched[:4]))
    if hf_meta.get("format") != "pt":
        failures.append("metadata format " + repr(hf_meta.get("format")))
    print(f"hf_checkpoint {family}: reckon -> HF ({hf_meta.get('architecture')}): {len(hf)} tensors, "
          f"{len(want) - len(mismatched)} equal bit for bit to reckon's parameters")

    # 2. HF (written here from the twin) -> reckon, one step, -> HF; PyTorch takes the same step.
    with torch.no_grad():
        for n, p in model.named_parameters():
            gain = n.endswith("norm.weight") and cfg.get("norm_unit_offset") != "true"  # Gemma's gains start at 0
            p.normal_(1.0 if gain else 0.0, 0.05)
    bf16 = family == "qwen2"
    if bf16:  # the file holds bfloat16; both sides start from its values
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.bfloat16().float())
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    file = to_hf(table, state)
    if family == "gpt2":  # as the Hub's gpt2 files: the base model's names, with the attention's mask buffers
        file = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in file.items()}
        t = int(cfg["context_length"])
        for i in range(int(cfg["num_layers"])):
            file[f"h.{i}.attn.bias"] = torch.tril(torch.ones(t, t)).view(1, 1, t, t)
    if family == "llama":
        file["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    if bf16:
        file = {k: v.bfloat16() for k, v in file.items()}
        file["lm_head.weight"] = file["model.embed_tokens.weight"].clone()  # a tied head's second copy
    write_safetensors(path("init"), file, {"format": "pt"})
    out = run(reckon, ["train", "--preset", "tiny", "--steps", "1", "--init-from", path("init"), "--dump-grads",
                       path("grads"), "--save-format", "hf", "--save", path("after")] + sets + common)
    if "initialised: parameters from" not in out:
        failures.append("no 'initialised' line")
    dumped, dmeta = read_safetensors(path("grads"))
    after = from_hf(table, read_safetensors(path("after"))[0], shapes)
    torch.set_num_threads(2)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), betas=(float(cfg["beta1"]), float(cfg["beta2"])),
                            eps=float(cfg["adam_eps"]), weight_decay=float(cfg["weight_decay"]))
    loss = model(dumped["batch.tokens"].long(), dumped["batch.targets"].long())
    loss.backward()
    loss_err = abs(loss.item() - float(dmeta["loss"])) / abs(float(dmeta["loss"]))
    if not loss_err <= 1e-6:
        failures.append(f"loss {loss_err:.2e}")
    worst = (0.0, "")
    params = dict(model.named_parameters())
    for n in params:
        e = grad_error(n, params, dumped[n])
        worst = max(worst, (e, n))
        if not e <= 1e-5:
            failures.append("grad " + n)
    # The first AdamW step from fresh state moves each weight by about ±lr·sign(g), which magnifies a gradient's
    # rounding where g is tiny: torch's step takes reckon's gradients (compared above), so what is checked here is the
    # saved file's layout and the update, not the rounding of tiny gradients twice.
    with torch.no_grad():
        for n, p in params.items():
            p.grad.copy_(dumped[n].float())
    opt.step()
    worst_p = (0.0, "")
    for n, p in params.items():
        if n.endswith("attn.wk.bias"):  # Adam turns its rounding-level gradient into ±lr steps: not compared
            continue
        e = rel(p.detach(), after[n].float())
        worst_p = max(worst_p, (e, n))
        if not e <= 1e-6:
            failures.append("param " + n)
    print(f"hf_checkpoint {family}: HF -> reckon: loss rel {loss_err:.2e}, gradients worst {worst[0]:.2e} ({worst[1]}),"
          f" after one AdamW step, read back from reckon's HF file: worst {worst_p[0]:.2e} ({worst_p[1]})")
    if failures:
        print("hf_checkpoint: FAILED: " + "; ".join(failures[:10]))
        sys.exit(1)
    print("hf_checkpoint: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
