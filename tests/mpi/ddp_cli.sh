#!/usr/bin/env bash
# `mpirun -np 2 reckon train --zero S` (S = 0 DDP … 3) against `reckon train` alone with the same global batch:
# losses within 1e-6 relative per step (20 steps, fp32), rank 0 alone writes the JSON, and the same with 2
# micro-batches per step against one batch twice as large; every rank's step reconciled exactly per stage; bad data-parallel input (and a rank killed mid-run) exits non-zero on every rank
# with the field named, and no rank hangs (timeouts).
# usage: ddp_cli.sh path/to/reckon workdir
set -euo pipefail
reckon=$1 work=$2
mkdir -p "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
common=(train --preset tiny --steps 20 --threads 1 --quiet --set batch_size=4)
# The losses of run $1's JSON against run $2's: $3 steps each, within 1e-6 relative per step ($4 names the case).
same_losses() {
  /usr/bin/python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
got = [s["loss"] for s in json.load(open(sys.argv[1]))["steps"]]
want = [s["loss"] for s in json.load(open(sys.argv[2]))["steps"]]
steps, case = int(sys.argv[3]), sys.argv[4]
assert len(got) == len(want) == steps, (len(got), len(want))
worst = max(abs(a - b) / abs(b) for a, b in zip(got, want))
assert worst <= 1e-6, f"{case}: losses differ from the single process by {worst:.2e} relative"
print(f"ddp_cli: {case}, {steps} steps, worst relative loss difference {worst:.2e} (<= 1e-6)")
PY
}
rm -f "$work"/zero*.json "$work/single.json"
timeout 300 "$reckon" "${common[@]}" --json "$work/single.json" > "$work/single.txt"
# Every stage on 2 ranks against the single process: the same 20 losses within 1e-6 relative.
for stage in 0 1 2 3; do
  timeout 300 mpirun --oversubscribe -np 2 "$reckon" "${common[@]}" --zero $stage --json "$work/zero$stage.json" > "$work/zero$stage.txt"
  same_losses "$work/zero$stage.json" "$work/single.json" 20 "zero stage $stage"
done
grep -q "data parallel (--zero 0): 2 ranks × batch 2 = global batch 4; DDP" "$work/zero0.txt"
# Each rank's step reconciled exactly (memory incl. the gradient buckets, counts incl. all_reduce), one and two
# buckets (vocab 16384 × d_model 256 puts 8.4 M parameters = 33.6 MB of gradients past one 25 MiB bucket).
timeout 300 mpirun --oversubscribe -np 2 "$reckon" reconcile --preset tiny --threads 1 > "$work/rec1.txt"
grep -q "reconcile: 2 of 2 ranks exact" "$work/rec1.txt"
timeout 300 mpirun --oversubscribe -np 2 "$reckon" reconcile --preset tiny --threads 1 --set vocab_size=16384 \
  --set d_model=256 --set d_ff=512 --set precision=amp-bf16 > "$work/rec2.txt"
grep -q "| all_reduce    | communication |     2 |" "$work/rec2.txt"
grep -q "reconcile: 2 of 2 ranks exact" "$work/rec2.txt"
# bucket_cap_mb = 3: the 16 MiB embedding and head alone, the two layers' 2.5 MiB each: 4 buckets.
timeout 300 mpirun --oversubscribe -np 2 "$reckon" reconcile --preset tiny --threads 1 --set vocab_size=16384 \
  --set d_model=256 --set d_ff=512 --set bucket_cap_mb=3 > "$work/rec2b.txt"
grep -q "| all_reduce    | communication |     4 |" "$work/rec2b.txt"
grep -q "reconcile: 2 of 2 ranks exact" "$work/rec2b.txt"
# ZeRO-1/2/3 on 2 and 3 ranks (uneven shards): every rank exact — its shards of the optimizer state, gradients,
# parameters, the per-layer gathered parameters and full gradients, every collective's calls and bytes. On 2 ranks
# a LLaMA-style attention: 2 K/V heads for 4 query heads (k and v 128 × 256) and rotary positions, with Gemma-2's
# 12-key window on layer 0 (layer 1 global), soft-capped scores and logits, Qwen2's q/k/v biases, and LayerNorm with
# β and a biased GeGLU (tanh form) MLP. On 3 ranks, mixed precision, GPT-2's block: LayerNorm with β, biases on
# every linear, a GELU MLP.
for stage in 1 2 3; do
  timeout 300 mpirun --oversubscribe -np 2 "$reckon" reconcile --preset tiny --threads 1 --set vocab_size=16384 \
    --set d_model=256 --set d_ff=512 --set num_kv_heads=2 --set position=rope --set sliding_window=12 \
    --set sliding_window_pattern=2 --set attn_logit_softcapping=5 --set final_logit_softcapping=30 \
    --set attention_bias=qkv --set norm=layernorm --set norm_bias=true --set ffn=geglu_tanh --set mlp_bias=true \
    --zero $stage > "$work/rec_z$stage.txt"
  grep -q "reconcile: 2 of 2 ranks exact" "$work/rec_z$stage.txt"
  for precision in amp-bf16 bf16; do
    timeout 300 mpirun --oversubscribe -np 3 "$reckon" reconcile --preset tiny --threads 1 --set batch_size=6 \
      --set precision=$precision --set tie_embeddings=false --set norm=layernorm --set norm_bias=true \
      --set ffn=gelu_tanh_mlp --set mlp_bias=true --set attention_bias=qkvo --zero $stage \
      > "$work/rec_z${stage}_$precision.txt"
    grep -q "reconcile: 3 of 3 ranks exact" "$work/rec_z${stage}_$precision.txt"
  done
done
# Gradient accumulation: 2 micro-batches of 4 rows (2 per rank) per step against the single process's batch of 8 —
# the same rows, losses within 1e-6 relative per step; DDP and ZeRO-1 reduce once per step, ZeRO-2/3 once per
# micro-batch (then add into the shard); every rank's step of 2 micro-batches reconciled exactly (3 ranks, bf16).
timeout 300 "$reckon" train --preset tiny --steps 6 --threads 1 --quiet --set batch_size=8 --json "$work/single8.json" \
  > /dev/null
for stage in 0 1 2 3; do
  timeout 300 mpirun --oversubscribe -np 2 "$reckon" train --preset tiny --steps 6 --threads 1 --quiet \
    --set batch_size=4 --set gradient_accumulation_steps=2 --zero $stage --json "$work/accum$stage.json" > /dev/null
  same_losses "$work/accum$stage.json" "$work/single8.json" 6 "zero stage $stage, 2 micro-batches × 2 ranks"
  timeout 300 mpirun --oversubscribe -np 3 "$reckon" reconcile --preset tiny --threads 1 --set batch_size=6 \
    --set gradient_accumulation_steps=2 --set precision=bf16 --zero $stage > "$work/rec_accum$stage.txt"
  grep -q "reconcile: 3 of 3 ranks exact" "$work/rec_accum$stage.txt"
done
grep -q "| all_reduce    | communication |     1 |" "$work/rec_accum0.txt"  # once per step, not per micro-batch
grep -q "| grad_accumulate | backward" "$work/rec_accum2.txt"
grep -q "| reduce_scatter" "$work/rec_z2.txt"
grep -q "| all_gather" "$work/rec_z3.txt"
if grep -q "| all_reduce " "$work/rec_z3.txt"; then echo "ddp_cli: ZeRO-3 all-reduced gradients"; exit 1; fi
expect_refusal() {  # ranks, message, args...
  local ranks=$1 needle=$2; shift 2
  set +e
  out=$(timeout 120 mpirun --oversubscribe -np "$ranks" "$reckon" train --preset tiny --steps 1 --threads 1 --quiet "$@" 2>&1)
  code=$?
  set -e
  if [[ $code -eq 0 || $code -eq 124 ]]; then echo "ddp_cli: '$*' on $ranks ranks exited $code, expected a refusal"; exit 1; fi
  if ! grep -qF -- "$needle" <<< "$out"; then echo "ddp_cli: '$*': no '$needle' in: $out"; exit 1; fi
}
expect_refusal 2 "zero_stage: 4 is outside the allowed range [0, 3]" --zero 4
expect_refusal 2 "--save: checkpoints of a sharded optimizer (zero_stage ≥ 1) are not built yet" --zero 1 --save "$work/never.st"
test ! -e "$work/never.st"
for stage in 1 2; do  # ZeRO-1 reduce-scatters the gradients too: each rank holds the mean of its range only
  expect_refusal 2 "--dump-grads: with zero_stage $stage each rank holds the averaged gradients of only its shard" \
    --zero $stage --dump-grads "$work/never.st"
  test ! -e "$work/never.st"
done
# Ranks given different --steps (the one with fewer once left the others in a collective for ever), --data
# contents, or checkpoints: every rank refuses before the first step, naming what differs; nothing hangs.
mpmd_refusal() {  # message, rank 0's args, rank 1's args (each one string)
  local needle=$1
  set +e
  out=$(timeout 60 mpirun --oversubscribe -np 1 "$reckon" train --quiet --threads 1 $2 : -np 1 "$reckon" train \
    --quiet --threads 1 $3 2>&1)
  code=$?
  set -e
  [[ $code -eq 2 ]] || { echo "ddp_cli: '$2' : '$3' exited $code (124 = hung), expected 2"; exit 1; }
  grep -qF -- "$needle" <<< "$out" || { echo "ddp_cli: no '$needle' in: $out"; exit 1; }
}
tiny2="--preset tiny --set batch_size=2"
mpmd_refusal "rank 1: this rank has --steps 6, rank 0 has --steps 3" "$tiny2 --steps 3" "$tiny2 --steps 6"
head -c 20000 /usr/share/common-licenses/GPL-3 > "$work/data_a.txt"
tr 'a-z' 'b-za' < "$work/data_a.txt" > "$work/data_b.txt"
mpmd_refusal "(rank 1: this rank has --data of bytes=20000 fingerprint=" \
  "$tiny2 --steps 2 --data $work/data_a.txt" "$tiny2 --steps 2 --data $work/data_b.txt"
"$reckon" train $tiny2 --steps 2 --threads 1 --quiet --save "$work/ck2.st" > /dev/null
"$reckon" train $tiny2 --steps 3 --threads 1 --quiet --save "$work/ck3.st" > /dev/null
mpmd_refusal "--resume / --init-from: 1 of the 2 mpirun ranks differ from rank 0's (rank 1: this rank has a starting state (parameters, AdamW state, step 3)" \
  "--resume $work/ck2.st --steps 2" "--resume $work/ck3.st --steps 2"
mpmd_refusal "give every rank the same checkpoint file" "$tiny2 --init-from $work/ck2.st --steps 2" \
  "$tiny2 --init-from $work/ck3.st --steps 2"
# The same checkpoint on both ranks resumes.
timeout 120 mpirun --oversubscribe -np 2 "$reckon" train --resume "$work/ck2.st" --steps 2 --threads 1 --quiet \
  > "$work/resumed2.txt"
grep -q "resumed: $work/ck2.st after step 2" "$work/resumed2.txt"
# Ranks started with different configs (an MPMD launch): every rank refuses, naming the field.
set +e
out=$(timeout 120 mpirun --oversubscribe -np 1 "$reckon" train --preset tiny --steps 1 --quiet --set batch_size=2 : \
  -np 1 "$reckon" train --preset tiny --steps 1 --quiet --set batch_size=2 --set d_model=32 2>&1)
code=$?
set -e
[[ $code -ne 0 && $code -ne 124 ]] || { echo "ddp_cli: mismatched configs exited $code"; exit 1; }
grep -qF "rank 1: this rank has d_model=32, rank 0 has d_model=64" <<< "$out" || { echo "ddp_cli: no mismatch message in: $out"; exit 1; }
# One rank refusing its input while the other goes on into the collectives: the job ends, exit 2, no hang.
set +e
out=$(timeout 60 mpirun --oversubscribe -np 1 "$reckon" train --preset tiny --steps 3 --quiet --set batch_size=2 : \
  -np 1 "$reckon" train --preset tiny --steps 0 --quiet --set batch_size=2 2>&1)
code=$?
set -e
[[ $code -eq 2 ]] || { echo "ddp_cli: one rank refusing: mpirun exited $code (124 = hung)"; exit 1; }
grep -qF -- "--steps: 0 is outside the allowed range" <<< "$out" || { echo "ddp_cli: no refusal message in: $out"; exit 1; }
# A rank killed mid-run: mpirun ends the job, non-zero, naming the rank; no one hangs.
timeout 120 mpirun --oversubscribe -np 2 "$reckon" train --preset tiny --steps 100000 --threads 1 --quiet \
  --set batch_size=2 --zero 3 > "$work/killed.txt" 2>&1 &
launcher=$!  # timeout, whose child is mpirun, whose children are the ranks
ranks=""
for _ in $(seq 200); do  # wait until both ranks are training
  mpirun_pid=$(pgrep -P "$launcher" || true)
  [[ -n "$mpirun_pid" ]] && ranks=$(pgrep -P "$mpirun_pid" || true)
  [[ $(wc -w <<< "$ranks") -eq 2 ]] && grep -q "data parallel" "$work/killed.txt" && break
  sleep 0.1
done
victim=$(tail -1 <<< "$ranks")
sleep 0.5
kill -9 "$victim"
set +e
wait "$launcher"
code=$?
set -e
[[ $code -ne 0 && $code -ne 124 ]] || { echo "ddp_cli: killed rank: mpirun exited $code"; cat "$work/killed.txt"; exit 1; }
grep -q "exited on signal 9" "$work/killed.txt" || { echo "ddp_cli: no message about the killed rank:"; cat "$work/killed.txt"; exit 1; }
expect_refusal 3 "batch_size: 4 is not divisible by the 3 mpirun ranks" --set batch_size=4
# bf16 gradients (and master weights) under DDP: every rank exact.
timeout 300 mpirun --oversubscribe -np 2 "$reckon" reconcile --preset tiny --threads 1 --set precision=bf16 > "$work/rec5.txt"
grep -q "reconcile: 2 of 2 ranks exact" "$work/rec5.txt"
echo "ddp_cli: 1 passed, 0 failed"
