#!/usr/bin/env bash
# reckon beside its PyTorch 1.13 peers, same machine, same threads, in alternating rounds; prints one table of ratios.
#   bench/peer.sh [build-dir]          (THREADS=2, ROUNDS=3 by default; installs the peer with scripts/setup.sh --peer)
# The peers must run at their best: Debian's python3-torch with libopenblas0-openmp, run by /usr/bin/python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
threads=${THREADS:-2}
peers=${PEERS:-$root/../shared/peers}
out=$(mktemp -d)
export OMP_NUM_THREADS=$threads

"$root/scripts/setup.sh" --peer
[[ -x "$build/bench_adamw" && -x "$build/bench_train_step" ]] || { echo "peer.sh: build first (missing $build/bench_*)"; exit 2; }

# Rounds: reckon and PyTorch alternate, so the host's drift (its bandwidth moved by 1.7x between runs on this
# machine) hits both sides of each ratio alike; the table gives the median ratio over rounds and its range.
rounds=${ROUNDS:-3}
# STEPS=S runs the training-step rows on S only (M takes minutes per round in every precision).
STEP_CONFIGS=${STEPS:-S M}
STEP_PRESETS=$([[ "$STEP_CONFIGS" == "S" ]] && echo 0 || echo 01)
for r in $(seq 1 "$rounds"); do
  echo "round $r/$rounds: reckon AdamW (64 M parameters) and its roof ..."
  "$build/bench_adamw" --benchmark_filter='(fused|roof)/params:67108864' --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true --benchmark_out="$out/adamw_$r.json" --benchmark_out_format=json > /dev/null
  echo "round $r/$rounds: PyTorch AdamW ..."
  /usr/bin/python3 "$peers/adamw_bench.py" "$threads" > "$out/torch_adamw_$r.txt"
  echo "round $r/$rounds: reckon training step S and M, fp32 / amp-bf16 / bf16 ..."
  "$build/bench_train_step" --benchmark_filter="train_step/preset_M:[$STEP_PRESETS]/instrumented:1" \
    --benchmark_out="$out/step_$r.json" --benchmark_out_format=json > /dev/null
  for c in $STEP_CONFIGS; do
    echo "round $r/$rounds: PyTorch training step $c, fp32 and autocast bf16 ..."
    /usr/bin/python3 "$peers/lm_bench.py" --config "$c" --threads "$threads" --steps 5 > "$out/torch_${c}_$r.txt"
    /usr/bin/python3 "$peers/lm_bench.py" --config "$c" --threads "$threads" --steps 5 --amp bf16 > "$out/torch_${c}_amp_$r.txt"
  done
done

python3 - "$out" "$rounds" "$STEP_CONFIGS" <<'PY'
import json, re, statistics, sys
out, rounds, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def runs(path, aggregate=None):
    bs = json.load(open(path))["benchmarks"]
    return [b for b in bs if b.get("aggregate_name") == aggregate] if aggregate else [b for b in bs if b.get("run_type") == "iteration"]
rows = {}  # measurement -> list of (reckon, peer) per round
for r in range(1, rounds + 1):
    adamw = runs(f"{out}/adamw_{r}.json", "median")
    fused = next(b for b in adamw if "fused" in b["run_name"])["GB/s"]
    roof = next(b for b in adamw if "roof" in b["run_name"])["GB/s"]
    torch = 0.0
    for line in open(f"{out}/torch_adamw_{r}.txt"):
        m = re.search(r"set=flat64M .*GB/s@28B=([\d.]+)", line)
        if m: torch = max(torch, float(m.group(1)))  # the better of foreach on / off
    rows.setdefault("AdamW 64 M params, GB/s (PyTorch: best of foreach on/off)", []).append((fused, torch))
    rows.setdefault("AdamW fused vs its memory roof, GB/s", []).append((fused, roof))
    step = runs(f"{out}/step_{r}.json")
    def torch_tok_s(name):
        return json.loads(open(f"{out}/{name}").read().split("RESULT ", 1)[1].splitlines()[0])["full_tok_s"]
    for i, c in enumerate("SM"):
        if c not in configs: continue
        tok = {p: next(b for b in step if f"preset_M:{i}/instrumented:1/precision:{p}" in b["run_name"])["tokens/s"]
               for p in range(3)}
        fp32, amp = torch_tok_s(f"torch_{c}_{r}.txt"), torch_tok_s(f"torch_{c}_amp_{r}.txt")
        rows.setdefault(f"train step {c} fp32, tokens/s (PyTorch fp32)", []).append((tok[0], fp32))
        rows.setdefault(f"train step {c} amp-bf16, tokens/s (PyTorch autocast bf16)", []).append((tok[1], amp))
        rows.setdefault(f"train step {c} bf16 master weights, tokens/s (PyTorch autocast bf16)", []).append((tok[2], amp))
print(f"\n{rounds} rounds, reckon and PyTorch alternating; values are medians over rounds, ratio is the median of the per-round ratios")
print("\n| measurement | reckon | PyTorch 1.13 (or roof) | ratio (median) | ratio (range) |\n|---|---:|---:|---:|---:|")
for name, pairs in rows.items():
    ratios = [a / b for a, b in pairs]
    print(f"| {name} | {statistics.median(a for a, _ in pairs):.1f} | {statistics.median(b for _, b in pairs):.1f} | "
          f"{statistics.median(ratios):.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× |")
PY
rm -rf "$out"
