#!/usr/bin/env bash
# reckon beside its PyTorch 1.13 peers, same machine, same threads, back to back; prints one table of ratios.
#   bench/peer.sh [build-dir]          (THREADS=2 by default; installs the peer with scripts/setup.sh --peer)
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

echo "reckon: AdamW (64 M parameters) and its roof ..."
"$build/bench_adamw" --benchmark_filter='(fused|roof)/params:67108864' --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true --benchmark_out="$out/adamw.json" --benchmark_out_format=json > /dev/null
echo "reckon: training step S and M ..."
"$build/bench_train_step" --benchmark_filter='train_step/.*instrumented:1' --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out="$out/step.json" --benchmark_out_format=json > /dev/null
echo "PyTorch: AdamW ..."
/usr/bin/python3 "$peers/adamw_bench.py" "$threads" > "$out/torch_adamw.txt"
for c in S M; do
  echo "PyTorch: training step $c ..."
  /usr/bin/python3 "$peers/lm_bench.py" --config "$c" --threads "$threads" > "$out/torch_$c.txt"
done

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
def medians(path):
    runs = json.load(open(path))["benchmarks"]
    return {b["run_name"]: b for b in runs if b.get("aggregate_name") == "median"}
adamw = medians(f"{out}/adamw.json")
fused = next(v for k, v in adamw.items() if "fused" in k)
roof = next(v for k, v in adamw.items() if "roof" in k)
step = medians(f"{out}/step.json")
torch_adamw = {}
for line in open(f"{out}/torch_adamw.txt"):
    m = re.search(r"set=flat64M .*foreach=(\w+) .*GB/s@28B=([\d.]+)", line)
    if m: torch_adamw[m.group(1)] = float(m.group(2))
rows = []
gbs = lambda b: b["GB/s"]  # the counter is already in GB/s
rows.append(("AdamW 64 M params, GB/s", f"{gbs(fused):.1f}", f"{max(torch_adamw.values()):.1f}", gbs(fused) / max(torch_adamw.values())))
rows.append(("AdamW fused / its memory roof", f"{gbs(fused):.1f} / {gbs(roof):.1f}", "", gbs(fused) / gbs(roof)))
for i, c in enumerate("SM"):
    b = next(v for k, v in step.items() if f"preset_M:{i}/" in k)
    t = json.loads(open(f"{out}/torch_{c}.txt").read().split("RESULT ", 1)[1].splitlines()[0])
    rows.append((f"train step {c}, tokens/s", f"{b['tokens/s']:.0f}", f"{t['full_tok_s']:.0f}", b["tokens/s"] / t["full_tok_s"]))
print("\n| measurement | reckon | PyTorch 1.13 | ratio |\n|---|---:|---:|---:|")
for name, r, p, ratio in rows:
    print(f"| {name} | {r} | {p} | {ratio:.2f}× |")
PY
rm -rf "$out"
