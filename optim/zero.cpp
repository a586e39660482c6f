#include "optim/zero.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "ops/cast.h"
#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/checked.h"
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

ParameterSplit parameter_split(int64_t start, int64_t n, int64_t total, int ranks) {
  ParameterSplit s;
  for (int r = 0; r < ranks; ++r) {
    const auto [lo, hi] = owned_range(total, r, ranks);
    const int64_t a = std::max(lo, start), b = std::min(hi, start + n);
    s.counts.push_back(std::max<int64_t>(0, b - a));
    s.displs.push_back(std::clamp<int64_t>(a - start, 0, n));
  }
  return s;
}

int64_t owned_count(int64_t start, int64_t n, int64_t total, int rank, int ranks) {
  const auto [lo, hi] = owned_range(total, rank, ranks);
  return std::max<int64_t>(0, std::min(hi, start + n) - std::max(lo, start));
}

ZeroOptimizer::ZeroOptimizer(Transformer& model, const AdamWConfig& config, int64_t stage, int rank, int ranks)
    : model_(model),
      params_(model.parameters()),
      config_(config),
      stage_(stage),
      rank_(rank),
      ranks_(ranks),
      master_weights_(model.config().dtypes().master_weights),
      units_(model.units()) {
  for (const ParamSpec& spec : model.layout().params) gathered_bf16_.push_back(gathered_in_bf16(model.config(), spec));
  check_arg(stage >= 1 && stage <= 3, "zero_stage: {} is outside the range of the sharded optimizer [1, 3]", stage);
  std::vector<int64_t> sizes;
  for (const Parameter& p : params_) {
    starts_.push_back(total_);
    total_ += p.numel;
    sizes.push_back(p.numel);
  }
  segment_of_.assign(params_.size(), -1);
  for (const ShardSegment& s : owned_segments(sizes, rank, ranks)) {
    segment_of_[s.param] = static_cast<int>(segments_.size());
    segments_.push_back(Segment{s, {}, {}, {}, {}, {}});
    owned_ += s.count;
  }
  for (Segment& s : segments_) {
    const Parameter& p = params_[s.where.param];
    if (stage_ >= 2) s.grad = Tensor::empty({s.where.count}, Category::gradient, p.name + ".grad.shard", p.grad_dtype);
    if (stage_ == 3) {  // this rank's elements of the (identical on every rank) initial value
      s.value = Tensor::empty({s.where.count}, Category::parameter, p.name + ".shard", p.dtype);
      const int64_t eb = dtype_bytes(p.dtype);
      std::memcpy(s.value.raw_data(), static_cast<const char*>(p.value.raw_data()) + eb * s.where.offset,
                  static_cast<size_t>(eb * s.where.count));
    }
  }
  if (stage_ >= 2) {
    for (Parameter& p : params_) {
      p.grad.reset();
      if (stage_ == 3) p.value.reset();
    }
    model_.set_hooks(this);
  }
}

ZeroOptimizer::~ZeroOptimizer() {
  if (stage_ >= 2) model_.set_hooks(nullptr);
}

void ZeroOptimizer::all_gather_parameter(size_t i) {
  Parameter& p = params_[i];
  const ParameterSplit split = parameter_split(starts_[i], p.numel, total_, ranks_);
  all_gather_in_place(p.value.raw_data(), dtype_bytes(p.dtype), split.counts, split.displs);
}

// `full` (parameter i's shape: its dtype, or the bf16 operand of a float32 parameter) from this rank's shard, cast
// into its place when the dtypes differ, then everyone's.
void ZeroOptimizer::assemble(const Tensor& full, size_t i) {
  const Parameter& p = params_[i];
  const int64_t eb = dtype_bytes(full.dtype());
  const int seg = segment_of_[i];
  if (seg >= 0) {  // this rank's part in place, then everyone's
    const Segment& s = segments_[static_cast<size_t>(seg)];
    char* mine = static_cast<char*>(full.raw_data()) + eb * s.where.offset;
    if (full.dtype() != p.dtype)
      cast_into(reinterpret_cast<bf16*>(mine), s.value.data(), s.where.count);
    else
      std::memcpy(mine, s.value.raw_data(), static_cast<size_t>(eb * s.where.count));
  }
  if (ranks_ > 1) {
    const ParameterSplit split = parameter_split(starts_[i], p.numel, total_, ranks_);
    all_gather_in_place(full.raw_data(), eb, split.counts, split.displs);
  }
}

void ZeroOptimizer::gather(int unit) {
  if (stage_ != 3) return;
  const auto [first, last] = units_[static_cast<size_t>(unit)];
  for (int i = first; i < last; ++i) {
    Parameter& p = params_[static_cast<size_t>(i)];
    if (gathered_bf16_[static_cast<size_t>(i)]) {  // FSDP's mixed precision: the bf16 matmul operand itself
      Tensor& operand = model_.gathered_weight(i);
      operand = Tensor::empty(p.shape, Category::parameter, p.name + ".bf16", DType::bf16);
      assemble(operand, static_cast<size_t>(i));
    } else {
      p.value = Tensor::empty(p.shape, Category::parameter, p.name, p.dtype);
      assemble(p.value, static_cast<size_t>(i));
    }
  }
}

Tensor ZeroOptimizer::full_value(size_t i) {
  const Parameter& p = params_[i];
  if (stage_ != 3) return p.value;
  Tensor full = Tensor::empty(p.shape, Category::temporary, p.name + ".full", p.dtype);
  assemble(full, i);
  return full;
}

void ZeroOptimizer::release(int unit) {
  if (stage_ != 3) return;
  const auto [first, last] = units_[static_cast<size_t>(unit)];
  for (int i = first; i < last; ++i) {
    if (gathered_bf16_[static_cast<size_t>(i)])
      model_.gathered_weight(i).reset();
    else
      params_[static_cast<size_t>(i)].value.reset();
  }
}

void ZeroOptimizer::create_grads(int unit) {
  OpRecord record("zero_grad");  // created zeroed: backward accumulates into them
  const auto [first, last] = units_[static_cast<size_t>(unit)];
  for (int i = first; i < last; ++i) {
    Parameter& p = params_[static_cast<size_t>(i)];
    p.grad = Tensor::zeros(p.shape, Category::gradient, p.name + ".grad", p.grad_dtype);
    record.count.bytes_written += p.numel * dtype_bytes(p.grad_dtype);
  }
}

OpCount grad_accumulate_count(int64_t elements, DType shard, DType incoming) {
  const CheckedInt n = elements;
  return OpCount{
      1,  0, elements, (n * (dtype_bytes(shard) + dtype_bytes(incoming))).value(), (n * dtype_bytes(shard)).value(),
      0.0};
}

// shard[k] (+)= in[k] · scale, rounded once to the shard's dtype: `=` for a step's first micro-batch, `+=` after.
template <typename S, typename I>
static void write_shard(S* shard, const I* in, int64_t n, float scale, bool accumulate) {
  for (int64_t k = 0; k < n; ++k) {
    const float x = widen(in[k]) * scale;
    shard[k] = narrow<S>(accumulate ? widen(shard[k]) + x : x);
  }
}

void ZeroOptimizer::reduce_grads(int unit) {
  const auto [first, last] = units_[static_cast<size_t>(unit)];
  const float scale = 1.0f / static_cast<float>(ranks_);
  for (int i = first; i < last; ++i) {
    Parameter& p = params_[static_cast<size_t>(i)];
    const int seg = segment_of_[static_cast<size_t>(i)];
    const ShardSegment* where = seg >= 0 ? &segments_[static_cast<size_t>(seg)].where : nullptr;
    const Tensor* shard = seg >= 0 ? &segments_[static_cast<size_t>(seg)].grad : nullptr;
    const int64_t mine = where ? where->count : 0;
    // shard (+)= incoming · scale: a later micro-batch's is added, counted as its own op
    auto write = [&](const auto* incoming, float scale_by) {
      std::optional<OpRecord> add;
      if (accumulating_) {
        add.emplace("grad_accumulate");
        add->count = grad_accumulate_count(mine, p.grad_dtype, ranks_ == 1 ? p.grad_dtype : DType::f32);
      }
      dispatch_floating(p.grad_dtype, [&](auto tag) {
        using T = decltype(tag);
        write_shard(static_cast<T*>(shard->raw_data()), incoming, mine, scale_by, accumulating_);
      });
    };
    if (ranks_ == 1 && !accumulating_) {  // the whole gradient is this rank's: a copy
      const int64_t eb = dtype_bytes(p.grad_dtype);
      std::memcpy(shard->raw_data(), p.grad.raw_data(), static_cast<size_t>(eb * mine));
    } else if (ranks_ == 1) {
      dispatch_floating(p.grad_dtype, [&](auto tag) {
        using T = decltype(tag);
        write(static_cast<const T*>(p.grad.raw_data()), 1.0f);
      });
    } else {
      const ParameterSplit split = parameter_split(starts_[static_cast<size_t>(i)], p.numel, total_, ranks_);
      float unused = 0;
      if (p.grad_dtype == DType::f32 && !accumulating_) {  // straight from the gradient into the shard, then the mean
        float* out = shard ? shard->data() : &unused;
        reduce_scatter_sum(p.grad.data(), out, split.counts);
        for (int64_t k = 0; k < mine; ++k) out[k] = out[k] * scale;
      } else {  // bf16: widened exactly, summed in float32, the mean rounded once (as optim/data_parallel.cpp)
        Tensor wide;
        if (p.grad_dtype == DType::bf16) {
          wide = Tensor::empty({p.numel}, Category::temporary, "comm.bucket");
          convert_to_float(wide.data(), p.grad.data_bf16(), p.numel);
        }
        Tensor part = mine > 0 ? Tensor::empty({mine}, Category::temporary, "comm.shard") : Tensor();
        reduce_scatter_sum(wide.defined() ? wide.data() : p.grad.data(), mine > 0 ? part.data() : &unused,
                           split.counts);
        wide.reset();
        if (mine > 0) write(part.data(), scale);
      }
    }
    p.grad.reset();
  }
}

void ZeroOptimizer::create_state() {  // lazily, as AdamW: the state of this rank's segments only
  for (size_t i = 0; i < segments_.size(); ++i) {
    Segment& s = segments_[i];
    const Parameter& p = params_[s.where.param];
    if (master_weights_) {  // the widened bf16 value: exact
      s.master = Tensor::empty({s.where.count}, Category::optimizer_state, p.name + ".master");
      const bf16* value = stage_ == 3 ? s.value.data_bf16() : p.value.data_bf16() + s.where.offset;
      convert_to_float(s.master.data(), value, s.where.count);
    }
    s.m = Tensor::zeros({s.where.count}, Category::optimizer_state, p.name + ".exp_avg");
    s.v = Tensor::zeros({s.where.count}, Category::optimizer_state, p.name + ".exp_avg_sq");
    constexpr int64_t kChunk = int64_t{1} << 16;
    for (int64_t off = 0; off < s.where.count; off += kChunk)
      chunks_.push_back({i, off, std::min(kChunk, s.where.count - off)});
  }
}

void ZeroOptimizer::step() {
  if (step_ == 0) create_state();
  ++step_;
  {
    PhaseScope phase(Phase::optimizer);
    OpRecord record("adamw");
    const AdamWStep constants = adamw_step_constants(config_, step_);
    const int64_t n = static_cast<int64_t>(chunks_.size());
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n; ++c) {
      const Chunk& ch = chunks_[static_cast<size_t>(c)];
      Segment& s = segments_[ch.segment];
      Parameter& p = params_[s.where.param];
      const int64_t at = s.where.offset + ch.offset;  // within the full parameter
      float* m = s.m.data() + ch.offset;
      float* v = s.v.data() + ch.offset;
      if (master_weights_) {
        bf16* value = stage_ == 3 ? s.value.data_bf16() + ch.offset : p.value.data_bf16() + at;
        if (p.grad_dtype == DType::bf16) {
          const bf16* g = stage_ >= 2 ? s.grad.data_bf16() + ch.offset : p.grad.data_bf16() + at;
          adamw_update_master_fused(s.master.data() + ch.offset, m, v, g, value, ch.count, constants);
        } else {
          const float* g = stage_ >= 2 ? s.grad.data() + ch.offset : p.grad.data() + at;
          adamw_update_master_fused(s.master.data() + ch.offset, m, v, g, value, ch.count, constants);
        }
      } else {
        float* value = stage_ == 3 ? s.value.data() + ch.offset : p.value.data() + at;
        const float* g = stage_ >= 2 ? s.grad.data() + ch.offset : p.grad.data() + at;
        adamw_update_fused(value, m, v, g, ch.count, constants);
      }
    }
    record.count = master_weights_ && !params_.empty() ? adamw_master_count(owned_, config_, params_[0].grad_dtype)
                                                       : adamw_count(owned_, config_);
  }
  if (stage_ == 3 || ranks_ == 1) return;  // stage 3 gathers each unit where it is used
  for (size_t i = 0; i < params_.size(); ++i) all_gather_parameter(i);
}

}  // namespace reckon
