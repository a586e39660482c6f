#!/usr/bin/env python3
"""The GPU time model against published training runs: each run as a reckon config, `reckon estimate --json`'s
predicted tokens/s per GPU (gpu_step) beside the measured figure and the error, and beside the best constant-MFU
rule on the same runs (one MFU for all, chosen after the fact to minimise the median error: the best that rule can
do). Prints the markdown table docs/gpu_time.md carries.

    python3 bench/gpu_time_check.py build/reckon > /tmp/gpu_time_table.md

Sources of the runs: ../shared/research/gpu_time.md §7 (each row names its own). A run that uses what reckon does
not model (tensor or pipeline parallelism, HSDP, another recompute rule) is listed with the reason instead of an
error. Nothing here feeds back into the model's constants (estimators/gpu_step.cpp): they are kernel-level only.
"""
import json
import statistics
import subprocess
import sys

# GPT-3 shapes of the FlashAttention repository's training configs (Dao-AILab/flash-attention training/README.md):
# LayerNorm with biases, GELU MLP at 4·D, learned positions, tied embeddings, vocab 50257.
def gpt3(layers, d, heads, t):
    return ["--preset", "openai-gpt2", "--set", f"num_layers={layers}", "--set", f"d_model={d}", "--set",
            f"num_heads={heads}", "--set", f"d_ff={4 * d}", "--set", f"context_length={t}"]


# The README's global batches (0.5M tokens for 125M–760M, 1M for 1.3B and 2.7B, at T 2048) over 8 GPUs at the assumed
# micro-batch: 256 sequences = 8 GPUs × 8 × 4 micro-batches, 512 = 8 × 4 × 16.
def accumulated(args, k):
    return [*args, "--set", f"gradient_accumulation_steps={k}"]


def llama(preset, t, extra=()):
    return ["--preset", preset, "--set", f"context_length={t}", *extra]


# name, GPU, GPUs, ZeRO stage, config args, batch per GPU, recompute, measured tokens/s per GPU, source, not modelled
RUNS = [
    ("GPT3-125M, FA2 README", "a100-80gb", 8, 0, accumulated(gpt3(12, 768, 12, 2048), 4), 8, "none", 164e3,
     "flash-attention training/README.md (8×A100, 1310k tok/s)", ""),
    ("GPT3-355M, FA2 README", "a100-80gb", 8, 0, accumulated(gpt3(24, 1024, 16, 2048), 4), 8, "none", 62.9e3,
     "flash-attention training/README.md (503k tok/s)", ""),
    ("GPT3-760M, FA2 README", "a100-80gb", 8, 0, accumulated(gpt3(24, 1536, 16, 2048), 4), 8, "none", 30.6e3,
     "flash-attention training/README.md (245k tok/s)", ""),
    ("GPT3-1.3B, FA2 README", "a100-80gb", 8, 0, accumulated(gpt3(24, 2048, 16, 2048), 16), 4, "none", 21.1e3,
     "flash-attention training/README.md (169k tok/s)", ""),
    ("GPT3-2.7B, FA2 README", "a100-80gb", 8, 0, accumulated(gpt3(32, 2560, 20, 2048), 16), 4, "none", 10.6e3,
     "flash-attention training/README.md (85k tok/s)", ""),
    # FlashAttention-2 paper, Table 1: TFLOP/s per GPU in its convention (6·T·N + 12·L·D·T² a sequence), turned into
    # tokens/s with reckon's parameter count; micro-batch not stated (4 at T 2k, 1 at 8k assumed).
    ("GPT3-1.3B, FA2 Table 1, T 2k", "a100-80gb", 8, 0, gpt3(24, 2048, 16, 2048), 4, "none", ("tflops", 196),
     "Dao 2023 (arXiv 2307.08691) Table 1", ""),
    ("GPT3-1.3B, FA2 Table 1, T 8k", "a100-80gb", 8, 0, gpt3(24, 2048, 16, 8192), 1, "none", ("tflops", 220),
     "Dao 2023 (arXiv 2307.08691) Table 1", ""),
    ("GPT3-2.7B, FA2 Table 1, T 2k", "a100-80gb", 8, 0, gpt3(32, 2560, 20, 2048), 4, "none", ("tflops", 205),
     "Dao 2023 (arXiv 2307.08691) Table 1", ""),
    ("GPT3-2.7B, FA2 Table 1, T 8k", "a100-80gb", 8, 0, gpt3(32, 2560, 20, 8192), 1, "none", ("tflops", 225),
     "Dao 2023 (arXiv 2307.08691) Table 1", ""),
    ("Llama-2 7B, IBM FSDP", "a100-80gb", 128, 3, llama("llama2-7b", 4096), 2, "none", 3700,
     "PyTorch blog 2024-03-13, Table 1", "HSDP (sharded in a node, replicated across): reckon shards over all 128"),
    ("Llama-2 7B, IBM FSDP", "h100-sxm", 96, 3, llama("llama2-7b", 4096), 2, "none", 7500,
     "PyTorch blog 2024-03-13, Table 1", "HSDP (sharded in a node, replicated across): reckon shards over all 96"),
    ("Llama-2 34B, IBM FSDP", "a100-80gb", 128, 3,
     ["--preset", "llama2-70b", "--set", "num_layers=48", "--set", "d_model=8192", "--set", "num_heads=64", "--set",
      "num_kv_heads=8", "--set", "d_ff=22016", "--set", "context_length=4096"], 2, "full", 700,
     "PyTorch blog 2024-03-13, Table 1", ""),
    ("Llama-2 70B, IBM FSDP", "a100-80gb", 128, 3, llama("llama2-70b", 4096), 2, "full", 370,
     "PyTorch blog 2024-03-13, Table 1", ""),
    ("Llama-2 70B, IBM FSDP", "h100-sxm", 96, 3, llama("llama2-70b", 4096), 2, "full", 800,
     "PyTorch blog 2024-03-13, Table 1", ""),
    ("Llama 3 8B, torchtitan", "a100-80gb", 64, 3, llama("llama3-8b", 8192), 1, "attention", 2973,
     "torchtitan docs/performance.md (commit 0413364), selective op AC", ""),
    ("Llama 2 13B, torchtitan", "a100-80gb", 64, 3, llama("llama2-13b", 4096), 2, "none", 2162,
     "torchtitan docs/performance.md (commit 0413364)", ""),
    ("Llama 3 70B, torchtitan", "a100-80gb", 64, 3, llama("llama3-70b", 8192), 1, "full", 331,
     "torchtitan docs/performance.md (commit 0413364)", ""),
    ("Llama 2 70B, torchtitan", "a100-80gb", 64, 3, llama("llama2-70b", 4096), 2, "full", 353,
     "torchtitan docs/performance.md (commit 0413364)", ""),
    ("GPT-2 124M, llm.c", "a100-80gb", 8, 0, ["--preset", "openai-gpt2"], 64, "none", 231e3,
     "llm.c discussion #481 (10B tokens in ~90 min)", ""),
    ("GPT-2 124M, llm.c", "h100-sxm", 8, 0, ["--preset", "openai-gpt2"], 64, "none", 462e3,
     "modded-nanogpt README (llm.c baseline, 45 min)", ""),
    ("Megatron 175B (Korthikanti Table 5)", "a100-80gb", 64, 0, ["--preset", "gpt3-175b"], 1, "attention", 0,
     "Korthikanti et al. 2022, Table 5", "tensor and pipeline parallelism (TP 8, PP 8)"),
    ("Llama 3 405B (Llama 3 paper)", "h100-sxm", 8192, 0, ["--preset", "llama3.1-405b"], 1, "none", 0,
     "arXiv 2407.21783, Table 4", "tensor, pipeline and context parallelism"),
]


def predict(reckon, gpu, gpus, zero, args, batch, recompute):
    cmd = [reckon, "estimate", *args, "--set", "precision=amp-bf16", "--set", "attention=flash", "--set",
           f"recompute={recompute}", "--set", f"batch_size={batch}", "--gpu", gpu, "--json", "/dev/stdout"]
    if gpus > 1:
        cmd += ["--gpus", str(gpus), "--zero", str(zero)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stdout[-400:]} {out.stderr[-400:]}")
    j, _ = json.JSONDecoder().raw_decode(out.stdout[out.stdout.index("{"):])  # the JSON comes before the tables
    g = j["gpu_step"]
    t = j_context(j)
    model_flops_per_token = g["mfu"] * g["peak_flops"] * g["seconds"] / (batch * g["gradient_accumulation_steps"] * t)
    layers, d = [int(j["config"]["description"].split(f"{k} ")[1].split(",")[0]) for k in ("L", "D")]
    fa2_flops_per_token = 6 * j["num_parameters"] + 12 * layers * d * t  # FlashAttention-2's Table 1 convention
    return g, model_flops_per_token, fa2_flops_per_token


def j_context(j):
    return int(j["config"]["description"].split("T ")[1].split(",")[0])


def main():
    reckon = sys.argv[1]
    rows = []
    for name, gpu, gpus, zero, args, batch, recompute, measured, source, missing in RUNS:
        if missing:
            rows.append((name, gpu, gpus, zero, batch, recompute, None, measured, None, source, missing))
            continue
        g, per_token, fa2_per_token = predict(reckon, gpu, gpus, zero, args, batch, recompute)
        if isinstance(measured, tuple):  # TFLOP/s per GPU in FlashAttention-2's convention → tokens/s per GPU
            measured = measured[1] * 1e12 / fa2_per_token
        rows.append((name, gpu, gpus, zero, batch, recompute, g, measured, per_token, source, ""))
    checked = [r for r in rows if r[6] is not None]
    errors = [r[6]["tokens_per_second_per_gpu"] / r[7] - 1 for r in checked]
    # The best constant-MFU rule: tokens/s = MFU · peak / model FLOPs per token, one MFU for all runs.
    def rule_errors(mfu):
        return [mfu * r[6]["peak_flops"] / r[8] / r[7] - 1 for r in checked]
    best = min((statistics.median(abs(e) for e in rule_errors(m / 1000)), m / 1000) for m in range(100, 800))[1]
    rule = rule_errors(best)
    print("| run | GPU × N | ZeRO | batch/GPU (× micro-batches) | recompute | predicted tok/s/GPU | measured | error | "
          f"constant MFU {100 * best:.1f}% | error | predicted MFU | bound by |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    k = 0
    for name, gpu, gpus, zero, batch, recompute, g, measured, per_token, source, missing in rows:
        if g is None:
            print(f"| {name} | {gpu} × {gpus} | – | – | – | – | – | – | – | – | – | not modelled: {missing} |")
            continue
        e, re = errors[k], rule[k]
        k += 1
        exposed = g["exposed_communication_seconds"] / g["seconds"]
        bound = f"communication {100 * exposed:.0f}% exposed" if exposed > 0.05 else "compute"
        micro = g["gradient_accumulation_steps"]
        shown = f"{batch} × {micro}" if micro > 1 else f"{batch}"
        print(f"| {name} | {gpu} × {gpus} | {zero if gpus > 1 else '–'} | {shown} | {recompute} | "
              f"{g['tokens_per_second_per_gpu']:,.0f} | {measured:,.0f} | {100 * e:+.1f}% | "
              f"{best * g['peak_flops'] / per_token:,.0f} | {100 * re:+.1f}% | {100 * g['mfu']:.1f}% | {bound} |")
    abs_e = [abs(e) for e in errors]
    abs_r = [abs(e) for e in rule]
    print()
    print(f"reckon's model: median |error| {100 * statistics.median(abs_e):.1f}%, max {100 * max(abs_e):.1f}%, "
          f"within ±15%: {sum(e <= 0.15 for e in abs_e)} of {len(abs_e)}")
    print(f"best constant MFU ({100 * best:.1f}%, chosen after the fact): median |error| "
          f"{100 * statistics.median(abs_r):.1f}%, max {100 * max(abs_r):.1f}%, within ±15%: "
          f"{sum(e <= 0.15 for e in abs_r)} of {len(abs_r)}")


if __name__ == "__main__":
    main()
