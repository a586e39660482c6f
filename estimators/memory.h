// Memory of one training step, as implemented by reckon's runtime: arithmetic on the config alone.
//
// The estimator replays the model's schedule — every tensor the forward pass allocates, every temporary,
// every oneDNN scratchpad, and every free in backward, in order — on integers, and reports the peak and
// its breakdown by category. It never runs an op and never reads the allocator: a wrong formula or a
// changed schedule shows up as a non-zero difference in `reckon reconcile`.
//
// oneDNN scratchpad is the one term only oneDNN knows: its size is queried from the primitive descriptor of
// each matmul geometry (at the current thread count) and reported as its own term.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"
#include "runtime/matmul.h"

namespace reckon {

struct MemoryEstimateOptions {
  bool optimizer_state = true;    // steady state (step ≥ 2): AdamW m and v exist
  bool onednn_scratchpad = true;  // include scratchpad (queries oneDNN); false: pure arithmetic, no oneDNN
  bool batch_tensors = true;      // the int32 tokens and targets of the batch (category activation)
  bool live_at_peak = true;       // name the tensors live at the peak (false: totals only, several times faster)
  int data_parallel_ranks = 1;    // > 1: one rank's step under mpirun (+ the gradient buckets; zero_stage 1: its shard)
  int data_parallel_rank = 0;     // which rank (ZeRO-1's shard, and so its optimizer-state bytes, depends on it)
  bool step_events = false;       // keep every allocation and free of the step, in order (MemoryEstimate::step_events)
};

struct EstimatedTensor {
  std::string name;
  Category category;
  int64_t bytes;  // allocated (64-byte rounded)
};

struct MemoryEstimate {
  int64_t num_parameters = 0;
  std::array<int64_t, kNumCategories> peak_breakdown{};  // allocated bytes per category at the global peak
  std::array<int64_t, kNumCategories> category_peak{};   // each category's own peak
  int64_t peak_total = 0;
  int64_t scratchpad_at_peak = 0;  // part of peak_breakdown[temporary] that is oneDNN scratchpad
  int64_t scratchpad_max = 0;      // the largest single scratchpad of the step
  std::string peak_moment;         // the allocation that reached the peak, e.g. "backward: lm_head.logits …"
  std::vector<EstimatedTensor> live_at_peak;  // largest first
  int64_t step_end_total = 0;                 // live bytes after the optimizer step (parameters, grads, state, batch)
  // With options.step_events: the step's allocations and frees in order, from the forward pass's first (what
  // lives before it — parameters, gradients, state, the batch — is not an event of the step), as the
  // runtime's timeline of one step records them (runtime/allocator.h first_divergence compares the two).
  std::vector<AllocationEvent> step_events;
};

// The peak of one steady-state training step of `config` (batch size config.batch_size, T = context_length).
// Cost: a few hash-map operations per tensor event, linear in num_layers. Throws SizeOverflow if a byte count
// does not fit int64, std::invalid_argument if a scratchpad query exceeds oneDNN's limits.
MemoryEstimate estimate_step_memory(const ModelConfig& config, const MemoryEstimateOptions& options = {});

// The matmul calls of one training step, from the same replay: each distinct geometry under its op × phase,
// with the number of calls. Pure arithmetic (no oneDNN). Summed FLOPs equal the counters' matmul FLOPs.
struct StepMatmul {
  OpKey key;
  MatmulGeometry geometry;
  int64_t calls;
};
std::vector<StepMatmul> step_matmuls(const ModelConfig& config);

// Bytes per parameter of the parameter state — values, gradients, optimizer state — for each precision
// (model/precision.h), from its dtype plan; measured by the tracking allocator in tests/test_mixed_precision.cpp
// (BytesPerParameterByPrecisionMeasured) and tests/test_model.cpp (MasterWeightsBytes):
//   fp32                       4 + 4 + 8  = 16   (AdamW m, v)
//   amp-bf16                   4 + 4 + 8  = 16   + 2 per matmul weight while its bf16 copy lives (the step; at
//                                                  ZeRO-3 only while its unit is gathered: FSDP's mixed precision)
//   bf16 (bf16 grads)          2 + 2 + 12 = 16   (float32 master, m, v: the ZeRO paper's count)
//   bf16 (fp32 grads)          2 + 4 + 12 = 18   (Megatron-LM's count)
struct ParameterStateLayout {
  const char* name;  // "fp32", "amp-bf16", "bf16 (bf16 grads)", "bf16 (fp32 grads)"
  Precision precision;
  GradDType grad_dtype;
  int64_t value_bytes;  // per parameter
  int64_t grad_bytes;
  int64_t optimizer_bytes;
  int64_t weight_cache_bytes;  // per matmul-weight parameter, during the step (amp-bf16's bf16 copies)
  const char* source;          // who counts it this way
  int64_t total() const { return value_bytes + grad_bytes + optimizer_bytes; }
};
ParameterStateLayout parameter_state_layout(Precision precision, GradDType grad_dtype);
// The four, in the order above.
const std::vector<ParameterStateLayout>& parameter_state_layouts();

// Bytes that do not depend on the batch size (a of peak = a·B + b is the rest).
struct LinearMemory {
  int64_t per_sample;                    // a
  int64_t fixed;                         // b
  bool exact;                            // true if peak(B) = a·B + b held at every batch size checked
  std::vector<int64_t> batches_checked;  // 1, 2, 3, 4, 8 (fewer where a larger batch overflows int64)
};
// `check_batches` (3, 4, 8) are replayed to set `exact`; none: two replays, exact = false (a caller that
// searches a max batch by replay anyway needs only the fit).
LinearMemory memory_linear_in_batch(const ModelConfig& config, const MemoryEstimateOptions& options = {},
                                    bool check_batches = true);

// The largest batch size whose replayed peak (exact, with every tensor's 64-byte rounding) is at most `budget`:
// peak(B) ≤ budget < peak(B + 1); 0 if not even B = 1 fits. a·B + b gives the first guess; the replay decides
// (a batch whose bytes overflow int64 does not fit). A few replays, each linear in num_layers.
int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options = {});
// The same, with the a·B + b fit the caller already has (memory_linear_in_batch with the same options).
int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options,
                            const LinearMemory& fit);

}  // namespace reckon
