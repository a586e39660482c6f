#include "cli/memory_guard.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "cli/output.h"
#include "cli/table.h"
#include "estimators/fit.h"
#include "estimators/memory.h"
#include "runtime/machine.h"

namespace reckon {

int64_t memory_budget(const std::string& max_memory) {
  const int64_t physical = physical_memory_bytes();
  if (max_memory.empty()) {
    const int64_t available = available_memory_bytes();
    if (available > 0) return available;
    return physical > 0 ? physical : std::numeric_limits<int64_t>::max();  // unknown: no guard to apply
  }
  const int64_t budget = parse_bytes("--max-memory", max_memory);
  if (physical > 0 && budget > physical) {
    throw std::invalid_argument(fmt::format(
        "--max-memory: {} = {} B is above this machine's physical memory, {} B ({} MiB); a budget no step can "
        "use would only turn a clear refusal into an out-of-memory kill",
        max_memory, fmt_int(budget), fmt_int(physical), fmt_bytes_mib(physical)));
  }
  return budget;
}

namespace {
void refuse(std::string_view what, const ModelConfig& m, int64_t peak, int64_t budget,
            const MemoryEstimateOptions& options) {
  const int64_t fits = max_batch_in_budget(m, budget, options);
  throw std::invalid_argument(fmt::format(
      "--max-memory: {}: a training step of this config (batch_size {}) peaks at {} B ({} MiB; estimate, exact as "
      "implemented) but the budget is {} B ({} MiB); {}",
      what, m.batch_size, fmt_int(peak), fmt_bytes_mib(peak), fmt_int(budget), fmt_bytes_mib(budget),
      fits > 0 ? fmt::format("batch_size {} fits: lower batch_size or raise --max-memory", fits)
               : std::string("not even batch_size 1 fits: use a smaller model or raise --max-memory")));
}
}  // namespace

int64_t check_step_fits(std::string_view what, const ModelConfig& m, const AdamWConfig& optim, int64_t budget,
                        int ranks, int rank) {
  // A mixed precision needs bf16 matmuls: refuse before any oneDNN query, naming the ISA it needs.
  if (m.dtypes().act == DType::bf16) {
    check_bf16_matmul_available(fmt::format("{}: precision = {}", what, precision_name(m.precision)));
  }
  check_counts_fit(m, optim);
  MemoryEstimateOptions pure;
  pure.data_parallel_ranks = ranks;
  pure.data_parallel_rank = rank;
  pure.onednn_scratchpad = false;
  pure.live_at_peak = false;
  const int64_t pure_peak = estimate_step_memory(m, pure).peak_total;
  if (pure_peak > budget) refuse(what, m, pure_peak, budget, pure);
  MemoryEstimateOptions with_scratchpad = pure;
  with_scratchpad.onednn_scratchpad = true;
  const int64_t peak = estimate_step_memory(m, with_scratchpad).peak_total;
  if (peak > budget) refuse(what, m, peak, budget, with_scratchpad);
  return peak;
}

void check_bytes_fit(std::string_view what, int64_t bytes, int64_t budget) {
  if (bytes <= budget) return;
  throw std::invalid_argument(
      fmt::format("--max-memory: {} would allocate {} B ({} MiB) but the budget is {} B ({} MiB)", what, fmt_int(bytes),
                  fmt_bytes_mib(bytes), fmt_int(budget), fmt_bytes_mib(budget)));
}

}  // namespace reckon
