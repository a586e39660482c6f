#include "estimators/memory.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <stdexcept>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "estimators/replay.h"
#include "model/layout.h"
#include "ops/flash_attention.h"
#include "optim/zero.h"
#include "runtime/checked.h"
#include "runtime/machine.h"
#include "runtime/matmul.h"

namespace reckon {

MemoryEstimate estimate_step_memory(const ModelConfig& config, const MemoryEstimateOptions& options) {
  return replay_step(config, options, {});
}

std::vector<StepMatmul> step_matmuls(const ModelConfig& config) {
  std::vector<StepMatmul> matmuls;
  replay_step(config,
              {.optimizer_state = true, .onednn_scratchpad = false, .batch_tensors = true, .live_at_peak = false},
              {.matmuls = &matmuls});
  return matmuls;
}

LinearMemory memory_linear_in_batch(const ModelConfig& config, const MemoryEstimateOptions& options,
                                    bool check_batches) {
  MemoryEstimateOptions totals = options;
  totals.live_at_peak = false;
  auto peak_at = [&](int64_t batch) {
    ModelConfig c = config;
    c.batch_size = batch;
    return estimate_step_memory(c, totals).peak_total;
  };
  const CheckedInt p1 = peak_at(1), p2 = peak_at(2);
  LinearMemory lin{(p2 - p1).value(), (p1 - (p2 - p1)).value(), check_batches, {1, 2}};
  if (!check_batches) return lin;
  for (int64_t batch : {3, 4, 8}) {
    try {
      if (peak_at(batch) != (CheckedInt(lin.per_sample) * batch + lin.fixed).value()) lin.exact = false;
      lin.batches_checked.push_back(batch);
    } catch (const SizeOverflow&) {
      break;  // a batch this large does not fit int64 bytes: the check stops at the largest that does
    }
  }
  return lin;
}

int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options) {
  LinearMemory fit{0, 0, false, {}};  // no guess (start the search at 1) if even B = 2 overflows
  try {
    fit = memory_linear_in_batch(config, options);
  } catch (const SizeOverflow&) {
  }
  return max_batch_in_budget(config, budget, options, fit);
}

int64_t max_batch_in_budget(const ModelConfig& config, int64_t budget, const MemoryEstimateOptions& options,
                            const LinearMemory& lin) {
  ModelConfig c = config;
  MemoryEstimateOptions totals = options;
  totals.live_at_peak = false;
  auto fits = [&](int64_t batch) {
    c.batch_size = batch;
    try {
      return estimate_step_memory(c, totals).peak_total <= budget;
    } catch (const SizeOverflow&) {
      return false;
    }
  };
  if (!fits(1)) return 0;
  const int64_t guess =
      lin.per_sample > 0 && budget > lin.fixed ? std::max<int64_t>((budget - lin.fixed) / lin.per_sample, 1) : 1;
  // Bracket: lo fits, hi does not (galloping from the guess), then bisect.
  int64_t lo = 1, hi = guess;
  if (fits(guess)) {
    lo = guess;
    hi = guess + 1;
    for (int64_t step = 1; fits(hi); step *= 2) {
      lo = hi;
      if (hi > std::numeric_limits<int64_t>::max() / 4) return lo;  // beyond any batch a byte count can hold
      hi += step;
    }
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

ParameterStateLayout parameter_state_layout(Precision precision, GradDType grad_dtype) {
  const DTypePlan plan = dtype_plan(precision, grad_dtype);
  ParameterStateLayout l{};
  l.precision = precision;
  l.grad_dtype = grad_dtype;
  l.value_bytes = dtype_bytes(plan.param);
  l.grad_bytes = dtype_bytes(plan.grad);
  l.optimizer_bytes = plan.master_weights ? 12 : 8;  // (float32 master +) m + v
  l.weight_cache_bytes = plan.weight_cache ? 2 : 0;
  switch (precision) {
    case Precision::fp32:
      l.name = "fp32", l.source = "float32 everywhere: 4 + 4 + 8";
      break;
    case Precision::amp_bf16:
      l.name = "amp-bf16", l.source = "PyTorch autocast: fp32 state + bf16 weight copies during the step";
      break;
    case Precision::bf16:
      l.name = plan.grad == DType::bf16 ? "bf16 (bf16 grads)" : "bf16 (fp32 grads)";
      l.source = plan.grad == DType::bf16 ? "ZeRO (Rajbhandari et al. 2020): 2 + 2 + 12"
                                          : "Megatron-LM: gradients accumulated in fp32, 2 + 4 + 12";
      break;
  }
  return l;
}

const std::vector<ParameterStateLayout>& parameter_state_layouts() {
  static const std::vector<ParameterStateLayout> layouts = [] {
    std::vector<ParameterStateLayout> all;
    for (const PrecisionSetting& s : precision_settings())
      all.push_back(parameter_state_layout(s.precision, s.grad_dtype));
    return all;
  }();
  return layouts;
}

}  // namespace reckon
