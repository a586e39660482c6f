// Tables of what the runtime measured: memory by category (PyTorch's names), live tensors at the peak,
// FLOPs and bytes per op x phase.
#pragma once

#include <string>

#include "runtime/allocator.h"
#include "runtime/counters.h"

namespace reckon {

std::string memory_table(const MemoryStats& stats);
std::string live_at_peak_table(const TrackingAllocator& alloc, int top_n);
std::string counters_table(const Counters& counters);

}  // namespace reckon
