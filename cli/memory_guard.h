// The memory guard of every command that allocates model-sized memory (train, reconcile, extrapolate, demo,
// data loading): the step's memory is estimated first — exactly, as `reckon reconcile` proves — and a step
// that would not fit the budget is refused with the estimate and the budget, never a bare std::bad_alloc or
// an OOM kill.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "model/config.h"

namespace reckon {

// The budget: --max-memory if given (refused above this machine's physical memory), else MemAvailable.
int64_t memory_budget(const std::string& max_memory);

// Throws std::invalid_argument naming `what` (e.g. "reconcile S"), the estimated peak of one steady training
// step and the budget, with the batch size that would fit, if the step does not fit `budget` bytes. Refuses a
// mixed precision on a CPU without bf16 matmuls first (naming the ISA), then checks that the counts fit int64, then the
// arithmetic peak (no oneDNN), then the peak with oneDNN's scratchpad. Returns that peak.
int64_t check_step_fits(std::string_view what, const ModelConfig& config, const AdamWConfig& optim, int64_t budget,
                        int ranks = 1, int rank = 0);  // one rank's step of `ranks` under mpirun

// Throws std::invalid_argument if `bytes` (what `what` would allocate) exceed `budget`.
void check_bytes_fit(std::string_view what, int64_t bytes, int64_t budget);

}  // namespace reckon
