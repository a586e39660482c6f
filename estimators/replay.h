// The training step replayed on integers, in the model's order (model/transformer.cpp, optim/): every tensor it
// allocates and frees, every matmul it runs, and every op's FLOPs and bytes — each op's from the count its kernel
// declares (ops/*.h `*_count`, runtime/matmul.h for the products), composed here call by call. The schedule (which
// op runs when, what is freed after what) is the part written twice, on purpose: `reckon reconcile` compares it
// with the runtime event by event. Memory (estimators/memory.h) and FLOPs (estimators/flops.h) both read it.
#pragma once

#include <map>
#include <vector>

#include "estimators/memory.h"
#include "model/config.h"
#include "runtime/counters.h"

namespace reckon {

struct ReplayOutputs {
  std::vector<StepMatmul>* matmuls = nullptr;  // each distinct matmul geometry per op × phase, with its calls
  std::map<OpKey, OpCount>* counts = nullptr;  // per op × phase, as the counters record them (needs `optim`)
  const AdamWConfig* optim = nullptr;          // AdamW's FLOPs depend on weight decay
  bool counts_only = false;  // no byte bookkeeping (the MemoryEstimate returned is empty): counts at arithmetic's cost
};

// One steady-state step of `config` (options: as estimate_step_memory's).
MemoryEstimate replay_step(const ModelConfig& config, const MemoryEstimateOptions& options, const ReplayOutputs& out);

}  // namespace reckon
