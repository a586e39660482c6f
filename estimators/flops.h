// FLOPs and bytes of one training step per op × phase, as closed forms of the config: what reckon's kernels
// execute under docs/conventions.md (matmul 2·M·N·K; attention counts the full T×T products and the causal
// softmax; AdamW as its loop executes). Also the calls per op, so a schedule change cannot hide.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/config.h"
#include "runtime/counters.h"

namespace reckon {

// (op, phase) -> expected {calls, matmul_flops, other_flops, bytes_read, bytes_written}; seconds = 0.
// data_parallel_ranks > 1: the step of one rank under mpirun (`config.batch_size` is then the rank's batch), in
// phase communication: stage 0 one all_reduce per gradient bucket (bucket_cap_mb), 4 B per parameter in and out;
// stage 1 one reduce_scatter per bucket (out: this rank's range) and one all_gather per parameter after AdamW;
// stage 2 one reduce_scatter per parameter in backward and the all_gathers after AdamW; stage 3 one all_gather
// per parameter per use (layers and head twice, the embeddings once, three times when tied) and the
// reduce_scatters. Stages ≥ 1: AdamW over this rank's flat range (optim/zero.h); stages ≥ 2: zero_grad per unit
// in backward. With one rank (data_parallel_ranks = 1) every stage runs without collectives.
std::map<OpKey, OpCount> estimate_step_counts(const ModelConfig& config, const AdamWConfig& optim,
                                              int data_parallel_ranks = 1, int data_parallel_rank = 0);

// The elements of each data-parallel gradient bucket (optim/data_parallel.h bucket_ranges over the parameter
// layout, model/layout.h), as the runtime packs them.
std::vector<int64_t> gradient_buckets(const ModelConfig& config, int64_t bucket_bytes);

// recompute: forward ops re-run in backward (config field `recompute`). Model FLOPs (MFU's numerator) are
// forward + backward; hardware FLOPs (HFU's) add recompute.
struct StepFlops {
  int64_t forward = 0, backward = 0, recompute = 0, optimizer = 0;
  int64_t matmul_forward = 0, matmul_backward = 0, matmul_recompute = 0;
  int64_t total() const { return forward + backward + recompute + optimizer; }
  int64_t model() const { return forward + backward; }
  int64_t hardware() const { return forward + backward + recompute; }
};
StepFlops estimate_step_flops(const ModelConfig& config, const AdamWConfig& optim);

// MFU and HFU numerators (PaLM, Chowdhery et al. 2022, appendix B; Korthikanti et al. 2022):
//   model FLOPs:    forward + backward of the model itself, whatever the implementation — no recompute phase and
//                   no recomputation inside an attention kernel: the step of the same model with naive attention
//                   and recompute = none, as counted. Two conventions for the attention products Q·Kᵀ and P·V
//                   (and their backward): `full` counts all T×T score entries (the formula of PaLM, Megatron-LM
//                   and most MFU calculators), `causal` only the T(T+1)/2 entries at or below the diagonal (what a
//                   causal kernel must compute: torchtitan #341, Megatron-LM #831, MaxText #1988 argue it).
//   hardware FLOPs: what this config's step executes — forward + backward + recompute, as counted (flash: causal
//                   rows, scores recomputed in its backward; recompute: the re-run forward work).
// AdamW (optimizer) is in neither; training time adds it.
struct UtilizationFlops {
  int64_t model_causal = 0, model_full = 0, hardware = 0, optimizer = 0;
};
UtilizationFlops utilization_flops(const ModelConfig& config, const AdamWConfig& optim);
// Per sequence of a step: the fits of one micro-batch of B rows (gradient_accumulation_steps = 1), so at(K·B) is the
// step of K micro-batches of B rows (every count is linear in the rows; AdamW once).
struct UtilizationFlopsLinear {  // each exactly per_sample·B + fixed
  struct Fit {
    int64_t per_sample = 0, fixed = 0;
    double at(int64_t b) const { return static_cast<double>(per_sample) * b + fixed; }
  };
  Fit model_causal, model_full, hardware, optimizer;
};
UtilizationFlopsLinear utilization_flops_linear_in_batch(const ModelConfig& config, const AdamWConfig& optim);

// Step FLOPs as a function of the batch size: exactly per_sample·B + fixed (every count is linear in B; the
// fit is checked at B = 1, 2, 3), for a step of one micro-batch of B rows (gradient_accumulation_steps = 1: a training
// run's batch of B sequences per step; with ZeRO ≥ 2 accumulation's shard adds are left out). at(B) is a double: a
// training batch of millions of sequences has a step count beyond int64, which a double holds (53-bit mantissa:
// relative error below 1e-15).
struct LinearFlops {
  int64_t per_sample = 0;
  int64_t fixed = 0;
  double at(int64_t batch) const { return static_cast<double>(per_sample) * static_cast<double>(batch) + fixed; }
};
LinearFlops step_flops_linear_in_batch(const ModelConfig& config, const AdamWConfig& optim);

}  // namespace reckon
