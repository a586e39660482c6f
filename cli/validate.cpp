#include "cli/validate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "model/config.h"
#include "runtime/comm.h"

namespace reckon {

void check_same_on_all_ranks(const std::vector<std::string>& lines, std::string_view what, std::string_view hint) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  int differing = 0;
  const std::string root = rank0_text(text, &differing);
  if (differing == 0) return;
  // The first line where this rank's differs from rank 0's.
  auto split = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t a = 0, b; a < s.size(); a = b + 1) out.push_back(s.substr(a, (b = s.find('\n', a)) - a));
    return out;
  };
  const std::vector<std::string> theirs = split(root);
  std::string where = comm_rank() == 0 ? "the reference" : "same as rank 0";
  for (size_t i = 0; i < std::max(lines.size(), theirs.size()); ++i) {
    const std::string a = i < lines.size() ? lines[i] : "", b = i < theirs.size() ? theirs[i] : "";
    if (a != b) {
      where = fmt::format("this rank has {}, rank 0 has {}", a, b);
      break;
    }
  }
  throw std::invalid_argument(fmt::format("{}: {} of the {} mpirun ranks differ from rank 0's (rank {}: {}); {}", what,
                                          differing, comm_size(), comm_rank(), where, hint));
}

void check_same_config_on_all_ranks(const TrainConfig& config) {
  check_same_on_all_ranks(config_overrides(config), "config",
                          "every rank must get the same --preset, --config and --set");
}

std::string config_precision(const std::string& option_value) {
  if (option_value == "tf32") return "fp32";
  if (option_value == "fp32" || option_value == "amp-bf16" || option_value == "bf16") return option_value;
  throw std::invalid_argument(
      fmt::format("--precision: '{}' is not allowed; allowed values are fp32, tf32, amp-bf16, bf16", option_value));
}

void check_token_count(int64_t train_steps, int64_t train_batch, int64_t context_length) {
  const __int128 tokens = static_cast<__int128>(train_steps) * train_batch * context_length;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (tokens > kMax) {
    throw std::invalid_argument(fmt::format(
        "--train-steps {} × --train-batch {} × context_length {}: {:.3e} tokens do not fit int64 (largest value {}); "
        "lower --train-steps to at most {}",
        train_steps, train_batch, context_length, static_cast<double>(tokens), kMax,
        static_cast<int64_t>(kMax / (static_cast<__int128>(train_batch) * context_length))));
  }
}

ErrorExit error_exit(const std::exception& e) {
  const bool bad_input =
      dynamic_cast<const std::invalid_argument*>(&e) != nullptr ||
      dynamic_cast<const std::overflow_error*>(&e) != nullptr ||
      (dynamic_cast<const std::runtime_error*>(&e) != nullptr && dynamic_cast<const std::range_error*>(&e) == nullptr &&
       dynamic_cast<const std::underflow_error*>(&e) == nullptr);
  if (bad_input) return {kExitBadInput, fmt::format("reckon: error: {}", e.what())};
  return {kExitInternalError,
          fmt::format("reckon: internal error: {} (exit {}: not a problem with the input; please report it)", e.what(),
                      kExitInternalError)};
}

}  // namespace reckon
