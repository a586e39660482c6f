// The ranges of command-line options (checked with check_range, runtime/check.h: "--mfu: 1e-320 is outside the
// allowed range [1e-06, 1]"), and the token-count check of a training run.
#pragma once

#include <cstdint>
#include <string_view>

namespace reckon {

// Ranges shared by the subcommands and their --help text.
constexpr int64_t kMaxEstimateBatch = int64_t{1} << 16;  // = the config's batch_size range
constexpr int64_t kMaxTrainSteps = int64_t{1} << 40;      // training steps of a run being estimated
constexpr int64_t kMaxTrainBatch = int64_t{1} << 24;      // sequences per training step
constexpr double kMinMfu = 1e-6;                           // MFU in [1e-6, 1]: no zero, no denormal
constexpr double kMaxPeakGflops = 1e9;                     // 1 EFLOP/s: above any one machine

struct TrainConfig;
// Under mpirun: every rank must run rank 0's config (an MPMD launch or a per-rank config file can differ).
// Throws std::invalid_argument on every rank, naming the first differing field, if any rank's differs.
void check_same_config_on_all_ranks(const TrainConfig& config);

// steps × batch × context_length, the tokens of a training run, must fit int64 (checked in 128-bit).
void check_token_count(int64_t train_steps, int64_t train_batch, int64_t context_length);

}  // namespace reckon
