// `reckon demo`: the runtime on its own — one linear layer's forward and backward matmuls, with every byte and FLOP
// the tracking allocator and the counters saw.
#pragma once

#include <cstdint>
#include <string>

namespace reckon {

// rows × in → out; refused (exit 2, naming --max-memory) before allocating if it does not fit the budget.
int run_demo(int64_t rows, int64_t in, int64_t out, const std::string& max_memory);

}  // namespace reckon
