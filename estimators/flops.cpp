#include "estimators/flops.h"

#include <array>
#include <stdexcept>

#include <fmt/format.h>

#include "estimators/replay.h"
#include "model/layout.h"
#include "ops/attention.h"
#include "ops/flash_attention.h"
#include "optim/data_parallel.h"
#include "optim/zero.h"
#include "runtime/checked.h"

namespace reckon {

std::vector<int64_t> gradient_buckets(const ModelConfig& c, int64_t bucket_bytes) {
  const std::vector<int64_t> sizes = parameter_layout(c).sizes();
  std::vector<int64_t> buckets;
  for (const auto& [first, last] : bucket_ranges(sizes, bucket_bytes)) {
    int64_t elements = 0;
    for (size_t i = first; i < last; ++i) elements += sizes[i];
    buckets.push_back(elements);
  }
  return buckets;
}

std::map<OpKey, OpCount> estimate_step_counts(const ModelConfig& c, const AdamWConfig& optim, int data_parallel_ranks,
                                              int data_parallel_rank) {
  std::map<OpKey, OpCount> counts;
  const MemoryEstimateOptions arithmetic{.optimizer_state = true,
                                         .onednn_scratchpad = false,
                                         .batch_tensors = true,
                                         .live_at_peak = false,
                                         .data_parallel_ranks = data_parallel_ranks,
                                         .data_parallel_rank = data_parallel_rank};
  replay_step(c, arithmetic, {.counts = &counts, .optim = &optim, .counts_only = true});
  return counts;
}

StepFlops estimate_step_flops(const ModelConfig& config, const AdamWConfig& optim) {
  std::array<CheckedInt, kNumPhases> flops{}, matmul{};
  for (const auto& [key, count] : estimate_step_counts(config, optim)) {
    flops[static_cast<size_t>(key.phase)] += count.flops();
    matmul[static_cast<size_t>(key.phase)] += count.matmul_flops;
  }
  auto at = [](const std::array<CheckedInt, kNumPhases>& a, Phase p) { return a[static_cast<size_t>(p)].value(); };
  CheckedInt all = 0;
  for (const CheckedInt& f : flops) all += f;
  all.value();  // total() must fit too
  return StepFlops{at(flops, Phase::forward),   at(flops, Phase::backward), at(flops, Phase::recompute),
                   at(flops, Phase::optimizer), at(matmul, Phase::forward), at(matmul, Phase::backward),
                   at(matmul, Phase::recompute)};
}

UtilizationFlops utilization_flops(const ModelConfig& config, const AdamWConfig& optim) {
  const StepFlops executed = estimate_step_flops(config, optim);
  ModelConfig reference = config;
  reference.attention = AttentionKind::naive;
  reference.recompute = Recompute::none;
  const StepFlops model = estimate_step_flops(reference, optim);
  // Naive attention's products: forward 4·T²·d_k, backward 8·T²·d_k per (batch, head, layer) over all T×T
  // entries; causal keeps the V entries the mask keeps (T(T+1)/2, fewer in a sliding window's layers).
  const CheckedInt t = config.context_length, dk = config.head_size();
  const CheckedInt heads = CheckedInt(config.batch_size) * config.micro_batches() * config.num_heads;
  CheckedInt masked = 0;  // per (batch, head): the score entries outside the mask, over the layers
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const AttentionShape s{.seq = config.context_length, .window = config.layer_window(l)};
    masked += t * t - s.visible();
  }
  UtilizationFlops u;
  u.model_full = model.model();
  u.model_causal = (CheckedInt(u.model_full) - heads * 12 * dk * masked).value();
  u.hardware = executed.hardware();
  u.optimizer = executed.optimizer;
  return u;
}

UtilizationFlopsLinear utilization_flops_linear_in_batch(const ModelConfig& config, const AdamWConfig& optim) {
  ModelConfig at = config;
  at.gradient_accumulation_steps = 1;  // per sequence of the step, however its rows are split into micro-batches
  at.batch_size = 1;
  const UtilizationFlops u1 = utilization_flops(at, optim);
  at.batch_size = 2;
  const UtilizationFlops u2 = utilization_flops(at, optim);
  auto fit = [](int64_t f1, int64_t f2) {
    const CheckedInt per_sample = CheckedInt(f2) - f1;
    return UtilizationFlopsLinear::Fit{per_sample.value(), (CheckedInt(f1) - per_sample).value()};
  };
  return {fit(u1.model_causal, u2.model_causal), fit(u1.model_full, u2.model_full), fit(u1.hardware, u2.hardware),
          fit(u1.optimizer, u2.optimizer)};
}

LinearFlops step_flops_linear_in_batch(const ModelConfig& config, const AdamWConfig& optim) {
  ModelConfig at = config;
  at.gradient_accumulation_steps = 1;
  auto total = [&](int64_t b) {
    at.batch_size = b;
    return CheckedInt(estimate_step_flops(at, optim).total());
  };
  const CheckedInt f1 = total(1), f2 = total(2), f3 = total(3);
  const CheckedInt per_sample = f2 - f1, fixed = f1 - per_sample;
  if (f3 != fixed + 3 * per_sample) {
    throw std::logic_error(fmt::format("step FLOPs are not linear in the batch size: {}, {}, {} at B = 1, 2, 3",
                                       f1.value(), f2.value(), f3.value()));
  }
  return LinearFlops{per_sample.value(), fixed.value()};
}

}  // namespace reckon
