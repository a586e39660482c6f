// One training step (zero_grad, forward, backward, AdamW) and a measured steady-state step: what the
// tracking allocator and the counters saw, for reconciliation against the estimators.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/zero.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"

namespace reckon {

// Steps before a training run is steady. Step 1 creates the oneDNN primitives and first-touches every
// activation page. Step 1's AdamW then creates its state (lazily, as PyTorch does); m and v take freed blocks
// of the same size as activations from the allocator's cache (in S, d·d_ff = B·T·d), so step 2's forward
// first-touches fresh pages again (≈ 0.2 s on S). From step 3 on, every block comes from the cache.
constexpr int64_t kWarmUpSteps = 2;

// The optimizer a precision trains with: AdamW on the float32 parameters (fp32, amp-bf16), or AdamW on float32
// master weights behind the bf16 parameters (bf16: AdamWMasterWeights).
class StepOptimizer {
 public:
  // model.config().zero_stage ≥ 1: ZeroOptimizer over this rank's shard (runtime/comm's rank and size; one process
  // owns everything). data_parallel: rank 0's parameters are broadcast first (before stage 3 shards them).
  StepOptimizer(Transformer& model, const AdamWConfig& config, bool data_parallel = false);
  void step();
  int64_t steps_taken() const;
  // Checkpoints: the optimizer state by tensor name ((master,) m, v per parameter) and the step count.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  void set_steps_taken(int64_t steps);
  ZeroOptimizer* zero() { return zero_.get(); }  // zero_stage ≥ 1, else nullptr

 private:
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<AdamWMasterWeights> master_;
  std::unique_ptr<ZeroOptimizer> zero_;
};

// Fills the batch tensors with micro-batch k (0 ≤ k < gradient_accumulation_steps) of the step.
using MicroBatchFill = std::function<void(int64_t micro_batch)>;

// zero_grad (phase optimizer; not with zero_stage ≥ 2, whose gradients are created zeroed in backward), then per
// micro-batch (config field gradient_accumulation_steps, K): fill(k), forward, backward (each micro-batch's loss
// weighted 1/K); then (data parallel, stages 0 and 1: the gradients all-reduced once, optim/data_parallel.h; stages 2
// and 3 reduce-scatter them during every backward) the optimizer step. An empty fill keeps the batch tensors as they
// are for every micro-batch. Returns the loss: the mean over the micro-batches (data parallel: and over ranks, which
// is the global batch's loss when every rank has as many rows).
double training_step(Transformer& model, StepOptimizer& optimizer, const Tensor& tokens, const Tensor& targets,
                     bool data_parallel = false, const MicroBatchFill& fill = {});

// What a training run holds: the model (parameters, gradients), its AdamW, and the batch tensors
// (int32 (B, T), category activation, "batch.tokens" / "batch.targets"), allocated in that order.
struct TrainingSession {
  Transformer model;
  StepOptimizer optimizer;
  Tensor tokens, targets;

  bool data_parallel = false;  // the ranks of runtime/comm train together (each on its rows of the global batch)

  // data_parallel: every rank starts from rank 0's parameters (broadcast).
  explicit TrainingSession(const TrainConfig& config, bool data_parallel = false);
  TrainingSession(const TrainingSession&) = delete;  // the optimizer refers to the model's parameters
  TrainingSession& operator=(const TrainingSession&) = delete;
  double step(const MicroBatchFill& fill = {}) {
    return training_step(model, optimizer, tokens, targets, data_parallel, fill);
  }
  void warm_up() {
    for (int64_t i = 0; i < kWarmUpSteps; ++i) step();
  }
};

struct StepMeasurement {
  MemoryStats memory;  // peak stats of the measured step only
  std::vector<LiveBlock> live_at_peak;
  int64_t scratchpad_at_peak = 0;       // live oneDNN scratchpad bytes at the peak
  std::map<OpKey, OpCount> counts;      // per op x phase, the measured step only
  std::vector<AllocationEvent> events;  // the measured step's allocations and frees, in order
  double loss = 0;
};

// Builds the model, runs a first step (creates oneDNN primitives and AdamW state), then measures the second
// step from a clean peak and clean counters. Random tokens; batch tensors are category activation.
// data_parallel: one rank's step under mpirun (stage 0; config.batch_size is the rank's batch, each rank its rows
// of a global batch of batch_size × ranks).
StepMeasurement measure_steady_step(const TrainConfig& config, bool data_parallel = false);

}  // namespace reckon
