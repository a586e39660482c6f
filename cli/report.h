// Tables of what the runtime measured: memory by category (PyTorch's names), live tensors at the peak,
// FLOPs and bytes per op x phase.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "runtime/allocator.h"
#include "runtime/counters.h"
#include "estimators/time.h"

namespace reckon {

std::string memory_table(const MemoryStats& stats);
std::string live_at_peak_table(const TrackingAllocator& alloc, int top_n);
std::string counters_table(const Counters& counters);
// Per phase, per step: GFLOP, ms, GFLOP/s, % of `peak_gflops`.
std::string phase_totals_table(const Counters& counters, int64_t steps, double peak_gflops);

// Per op x phase, sorted by time: ms per step, share of the step, GFLOP/s, GB/s, the roofline time of its
// counted work on `machine`, and how close it runs to that (roofline / actual).
std::string profile_table(const Counters& counters, int64_t steps, const Roofline& machine);

// The same data, machine-readable (PyTorch's names for memory stats).
nlohmann::json memory_json(const TrackingAllocator& alloc, int top_n);
nlohmann::json counters_json(const Counters& counters, int64_t steps, double peak_gflops);
// Chrome / Perfetto trace-event JSON: op slices per phase (one track per phase) and counter tracks of
// allocated bytes per category, from the allocator's timeline.
nlohmann::json trace_json(const Counters& counters, const TrackingAllocator& alloc);

}  // namespace reckon
