// The ranges of command-line options (checked with check_range, runtime/check.h: "--mfu: 1e-320 is outside the
// allowed range [1e-06, 1]"), and the token-count check of a training run.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace reckon {

// Ranges shared by the subcommands and their --help text.
constexpr int64_t kMaxEstimateBatch = int64_t{1} << 16;  // = the config's batch_size range
constexpr int64_t kMaxTrainSteps = int64_t{1} << 40;     // training steps of a run being estimated
constexpr int64_t kMaxTrainBatch = int64_t{1} << 24;     // sequences per training step
constexpr double kMinMfu = 1e-6;                         // MFU in [1e-6, 1]: no zero, no denormal
constexpr double kMaxPeakGflops = 1e9;                   // 1 EFLOP/s: above any one machine

struct TrainConfig;
// Under mpirun: every rank must run rank 0's config (an MPMD launch or a per-rank config file can differ).
// Throws std::invalid_argument on every rank, naming the first differing field, if any rank's differs.
void check_same_config_on_all_ranks(const TrainConfig& config);
// The same for any lines (key=value) every rank must agree on: `what` names them in the message, `hint` says what
// to give every rank. A collective: every rank must call it.
void check_same_on_all_ranks(const std::vector<std::string>& lines, std::string_view what, std::string_view hint);

// --precision of estimate and extrapolate (fp32, tf32, amp-bf16, bf16) as the config's precision value: tf32 trains
// in fp32 (only the GPU's matmul peak differs). Throws std::invalid_argument naming the flag and the allowed values.
std::string config_precision(const std::string& option_value);

// steps × batch × context_length, the tokens of a training run, must fit int64 (checked in 128-bit).
void check_token_count(int64_t train_steps, int64_t train_batch, int64_t context_length);

// Exit codes: 0 done, 1 reconcile found a difference, 2 bad input (the message names the flag or field and its
// range), 3 training diverged (a non-finite loss), 70 an internal error — reckon's fault, whatever the input
// (sysexits.h's EX_SOFTWARE).
constexpr int kExitBadInput = 2, kExitDiverged = 3, kExitInternalError = 70;
// What the program prints for an exception that ended a subcommand, and its exit code. Bad input:
// std::invalid_argument (a flag, a field, a file's content), std::overflow_error (a count of the input that does
// not fit int64), std::runtime_error (a path the user named that cannot be read or written). Anything else —
// a logic_error such as "tensor allocated twice", bad_alloc, a library's own error — is an internal error.
struct ErrorExit {
  int code;
  std::string message;  // "reckon: error: …" or "reckon: internal error: …"
};
ErrorExit error_exit(const std::exception& e);

}  // namespace reckon
