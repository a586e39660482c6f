#include "cli/validate.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

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

}  // namespace reckon
