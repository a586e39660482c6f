// Does a config's arithmetic fit int64? Every byte and FLOP count of one step is checked int64 (SizeOverflow
// where it would wrap). This turns an overflow deep inside a formula into an error about the config's own
// fields: which ones, the largest value that fits, and the largest batch_size (or context_length) that does.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace reckon {

// Runs every count `reckon estimate` makes of one step of `config` (parameters, FLOPs and bytes per op,
// the memory replay, the textbook activations). Returns normally if all fit int64; otherwise throws
// std::invalid_argument:
//   "batch_size 4096 × context_length 131072 (…): a count of one step does not fit: integer overflow: … does
//    not fit int64 (largest value 9223372036854775807); the largest batch_size that fits at context_length … is …"
void check_counts_fit(const ModelConfig& config, const AdamWConfig& optim);

// True if every count of one step of `config` fits int64 (the predicate check_counts_fit searches with).
bool counts_fit(const ModelConfig& config, const AdamWConfig& optim);

}  // namespace reckon
