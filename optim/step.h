// One training step (zero_grad, forward, backward, AdamW) and a measured steady-state step: what the
// tracking allocator and the counters saw, for reconciliation against the estimators.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"

namespace reckon {

// zero_grad (phase optimizer), forward, backward, AdamW step. Returns the loss.
double training_step(Transformer& model, AdamW& optimizer, const Tensor& tokens, const Tensor& targets);

// What a training run holds: the model (parameters, gradients), its AdamW, and the batch tensors
// (int32 (B, T), category activation, "batch.tokens" / "batch.targets"), allocated in that order.
struct TrainingSession {
  Transformer model;
  AdamW optimizer;
  Tensor tokens, targets;

  explicit TrainingSession(const TrainConfig& config);
  TrainingSession(const TrainingSession&) = delete;  // the optimizer refers to the model's parameters
  TrainingSession& operator=(const TrainingSession&) = delete;
  double step() { return training_step(model, optimizer, tokens, targets); }
};

struct StepMeasurement {
  MemoryStats memory;                 // peak stats of the measured step only
  std::vector<LiveBlock> live_at_peak;
  int64_t scratchpad_at_peak = 0;     // live oneDNN scratchpad bytes at the peak
  std::map<OpKey, OpCount> counts;    // per op x phase, the measured step only
  double loss = 0;
};

// Builds the model, runs a first step (creates oneDNN primitives and AdamW state), then measures the second
// step from a clean peak and clean counters. Random tokens; batch tensors are category activation.
StepMeasurement measure_steady_step(const TrainConfig& config);

}  // namespace reckon
