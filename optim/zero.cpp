#include "optim/zero.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "optim/data_parallel.h"
#include "runtime/check.h"
#include "runtime/comm.h"

namespace reckon {

std::pair<int64_t, int64_t> owned_range(int64_t total, int rank, int ranks) {
  return {total * rank / ranks, total * (rank + 1) / ranks};
}

std::vector<ShardSegment> owned_segments(const std::vector<int64_t>& sizes, int rank, int ranks) {
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  const auto [begin, end] = owned_range(total, rank, ranks);
  std::vector<ShardSegment> out;
  int64_t start = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t lo = std::max(begin, start), hi = std::min(end, start + sizes[i]);
    if (lo < hi) out.push_back({i, lo - start, hi - lo});
    start += sizes[i];
  }
  return out;
}

ZeroAdamW::ZeroAdamW(std::vector<Parameter>& params, const AdamWConfig& config, int rank, int ranks)
    : params_(params), config_(config), rank_(rank), ranks_(ranks) {
  std::vector<int64_t> sizes;
  for (const Parameter& p : params_) {
    check_arg(p.value.dtype() == DType::f32 && p.grad.dtype() == DType::f32,
              "zero_stage = 1: parameter '{}' is {} with {} gradients; float32 parameters and gradients only so far "
              "(precision fp32 or amp-bf16)", p.name, dtype_name(p.value.dtype()), dtype_name(p.grad.dtype()));
    sizes.push_back(p.value.numel());
  }
  segments_ = owned_segments(sizes, rank, ranks);
  for (const ShardSegment& s : segments_) owned_ += s.count;
}

void ZeroAdamW::step() {
  if (step_ == 0) {  // lazily, as AdamW: the state of this rank's segments only
    for (const ShardSegment& s : segments_) {
      m_.push_back(Tensor::zeros({s.count}, Category::optimizer_state, params_[s.param].name + ".exp_avg"));
      v_.push_back(Tensor::zeros({s.count}, Category::optimizer_state, params_[s.param].name + ".exp_avg_sq"));
    }
  }
  ++step_;
  {
    PhaseScope phase(Phase::optimizer);
    OpRecord record("adamw");
    const AdamWStep constants = adamw_step_constants(config_, step_);
    const int64_t n = static_cast<int64_t>(segments_.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      const ShardSegment& s = segments_[static_cast<size_t>(i)];
      Parameter& p = params_[s.param];
      adamw_update_fused(p.value.data() + s.offset, m_[static_cast<size_t>(i)].data(), v_[static_cast<size_t>(i)].data(),
                         p.grad.data() + s.offset, s.count, constants);
    }
    record.count = adamw_count(owned_, config_);
  }
  if (ranks_ == 1) return;
  // All-gather the parameters, bucket by bucket over the flat range.
  std::vector<int64_t> starts;  // flat start of each parameter
  int64_t total = 0;
  for (const Parameter& p : params_) starts.push_back(total), total += p.value.numel();
  const int64_t per_bucket = kGradientBucketBytes / 4;
  for (int64_t a = 0; a < total; a += per_bucket) {
    const int64_t b = std::min(total, a + per_bucket);
    Tensor bucket = Tensor::empty({b - a}, Category::temporary, "comm.gather");
    float* buf = bucket.data();
    // This rank's part of [a, b) into the buffer.
    const auto [own_lo, own_hi] = owned_range(total, rank_, ranks_);
    const int64_t lo = std::max(a, own_lo), hi = std::min(b, own_hi);
    for (size_t i = 0; i < params_.size() && lo < hi; ++i) {
      const int64_t p_lo = std::max(lo, starts[i]), p_hi = std::min(hi, starts[i] + params_[i].value.numel());
      if (p_lo < p_hi) std::memcpy(buf + (p_lo - a), params_[i].value.data() + (p_lo - starts[i]), static_cast<size_t>(p_hi - p_lo) * 4);
    }
    std::vector<int64_t> counts(static_cast<size_t>(ranks_)), displs(static_cast<size_t>(ranks_));
    for (int r = 0; r < ranks_; ++r) {
      const auto [r_lo, r_hi] = owned_range(total, r, ranks_);
      const int64_t x = std::max(a, r_lo), y = std::min(b, r_hi);
      counts[static_cast<size_t>(r)] = std::max<int64_t>(0, y - x);
      displs[static_cast<size_t>(r)] = std::max<int64_t>(0, x - a);
    }
    all_gather_in_place(buf, counts, displs);
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t p_lo = std::max(a, starts[i]), p_hi = std::min(b, starts[i] + params_[i].value.numel());
      if (p_lo < p_hi) std::memcpy(params_[i].value.data() + (p_lo - starts[i]), buf + (p_lo - a), static_cast<size_t>(p_hi - p_lo) * 4);
    }
  }
}

}  // namespace reckon
