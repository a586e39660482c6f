#include "estimators/fit.h"

#include <limits>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "estimators/memory.h"
#include "model/layout.h"
#include "estimators/textbook.h"
#include "runtime/checked.h"

namespace reckon {

namespace {

// The SizeOverflow message of the first count that overflows, or "" if all fit.
std::string first_overflow(const ModelConfig& config, const AdamWConfig& optim) {
  try {
    parameter_layout(config).total();
    estimate_step_flops(config, optim);
    MemoryEstimateOptions pure;
    pure.onednn_scratchpad = false;
    pure.live_at_peak = false;
    estimate_step_memory(config, pure);
    step_matmuls(config);
    (CheckedInt(4) * textbook_activation_floats(config)).value();
    return "";
  } catch (const SizeOverflow& e) {
    return e.what();
  }
}

// The largest value in [1, hi] for which fits(value) holds, given fits is monotone (true then false), or 0.
template <typename Fits>
int64_t largest_fitting(int64_t hi, Fits fits) {
  int64_t lo = 0;  // fits(lo) holds (0: none known)
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid))
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace

bool counts_fit(const ModelConfig& config, const AdamWConfig& optim) { return first_overflow(config, optim).empty(); }

void check_counts_fit(const ModelConfig& config, const AdamWConfig& optim) {
  const std::string overflow = first_overflow(config, optim);
  if (overflow.empty()) return;
  const int64_t micro = config.micro_batches();
  const std::string head = fmt::format(
      "batch_size {} × context_length {}{} (V {}, L {}, D {}, H {}, d_ff {}): a count of one step does not fit: {}; ",
      config.batch_size, config.context_length,
      micro > 1 ? fmt::format(" × gradient_accumulation_steps {}", micro) : "", config.vocab_size, config.num_layers,
      config.d_model, config.num_heads, config.d_ff, overflow);
  // Every count grows with the micro-batches and the batch size: the largest that fits, by bisection (each probe
  // is a few replays, linear in num_layers).
  ModelConfig probe = config;
  if (micro > 1) {
    const int64_t k = largest_fitting(micro - 1, [&](int64_t v) {
      probe.gradient_accumulation_steps = v;
      return counts_fit(probe, optim);
    });
    if (k > 0) {
      throw std::invalid_argument(head + fmt::format("the largest gradient_accumulation_steps that fits at batch_size "
                                                     "{} is {}",
                                                     config.batch_size, k));
    }
    probe.gradient_accumulation_steps = 1;
  }
  const int64_t b = largest_fitting(config.batch_size - 1, [&](int64_t v) {
    probe.batch_size = v;
    return counts_fit(probe, optim);
  });
  if (b > 0) {
    throw std::invalid_argument(
        head + fmt::format("the largest batch_size that fits at context_length {} is {}", config.context_length, b));
  }
  probe.batch_size = 1;
  const int64_t t = largest_fitting(config.context_length - 1, [&](int64_t v) {
    probe.context_length = v;
    return counts_fit(probe, optim);
  });
  if (t > 0) {
    throw std::invalid_argument(head + fmt::format("even batch_size 1 overflows; the largest context_length that "
                                                   "fits at batch_size 1 is {}",
                                                   t));
  }
  throw std::invalid_argument(head +
                              "even batch_size 1 and context_length 1 overflow: lower vocab_size, d_model, "
                              "d_ff or num_layers");
}

}  // namespace reckon
