#include "optim/data_parallel.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/comm.h"
#include "optim/zero.h"

namespace reckon {

std::vector<std::pair<size_t, size_t>> bucket_ranges(const std::vector<int64_t>& sizes, int64_t bucket_bytes) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t first = 0; first < sizes.size();) {
    size_t last = first;
    int64_t elements = 0;
    while (last < sizes.size() && (last == first || 4 * (elements + sizes[last]) <= bucket_bytes)) {
      elements += sizes[last];
      ++last;
    }
    out.emplace_back(first, last);
    first = last;
  }
  return out;
}

namespace {

std::vector<std::pair<size_t, size_t>> parameter_buckets(const std::vector<Parameter>& params, int64_t bucket_bytes) {
  std::vector<int64_t> sizes;
  for (const Parameter& p : params) sizes.push_back(p.numel);
  return bucket_ranges(sizes, bucket_bytes);
}

// The gradients of [first, last) into one float32 bucket (bf16 widened exactly: the sum runs in float32).
Tensor pack_bucket(const std::vector<Parameter>& params, size_t first, size_t last, const std::string& name) {
  int64_t elements = 0;
  for (size_t i = first; i < last; ++i) elements += params[i].numel;
  Tensor bucket = Tensor::empty({elements}, Category::temporary, name);
  float* b = bucket.data();
  for (size_t i = first; i < last; ++i) {
    const Tensor& g = params[i].grad;
    if (g.dtype() == DType::bf16)
      convert_to_float(b, g.data_bf16(), g.numel());
    else
      std::memcpy(b, g.data(), static_cast<size_t>(g.numel()) * 4);
    b += g.numel();
  }
  return bucket;
}

// Elements [lo, hi) of the bucket's flat range (bucket coordinates), summed over ranks in `sum` (sum[0] is
// element lo), written back as the mean: rounded once to a bf16 gradient.
void unpack_mean(const float* sum, std::vector<Parameter>& params, size_t first, size_t last, int64_t lo, int64_t hi,
                 float scale) {
  int64_t start = 0;
  for (size_t i = first; i < last; ++i) {
    const Tensor& g = params[i].grad;
    const int64_t a = std::max(lo, start), b = std::min(hi, start + g.numel());
    if (a < b) {
      dispatch_floating(g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T* out = data_as<T>(g) + (a - start);
        const float* in = sum + (a - lo);
        for (int64_t k = 0; k < b - a; ++k) out[k] = narrow<T>(in[k] * scale);
      });
    }
    start += g.numel();
  }
}

}  // namespace

int64_t all_reduce_gradients(std::vector<Parameter>& params, int64_t bucket_bytes) {
  const int ranks = comm_size();
  if (ranks == 1) return 0;
  const float scale = 1.0f / static_cast<float>(ranks);
  const auto buckets = parameter_buckets(params, bucket_bytes);
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto [first, last] = buckets[k];
    Tensor bucket = pack_bucket(params, first, last, fmt::format("comm.bucket.{}", k));
    all_reduce_sum(bucket.data(), bucket.numel());
    unpack_mean(bucket.data(), params, first, last, 0, bucket.numel(), scale);
  }
  return static_cast<int64_t>(buckets.size());
}

int64_t reduce_scatter_gradients(std::vector<Parameter>& params, int64_t bucket_bytes) {
  const int ranks = comm_size(), rank = comm_rank();
  if (ranks == 1) return 0;
  const float scale = 1.0f / static_cast<float>(ranks);
  int64_t total = 0;
  for (const Parameter& p : params) total += p.numel;
  const auto buckets = parameter_buckets(params, bucket_bytes);
  int64_t bucket_start = 0;  // flat
  for (size_t k = 0; k < buckets.size(); ++k) {
    const auto [first, last] = buckets[k];
    Tensor bucket = pack_bucket(params, first, last, fmt::format("comm.bucket.{}", k));
    const int64_t elements = bucket.numel();
    // The ranks' owned ranges tile the flat parameters in rank order, so their parts of this bucket are
    // consecutive: MPI_Reduce_scatter's layout.
    const ParameterSplit split = parameter_split(bucket_start, elements, total, ranks);
    const int64_t mine = split.counts[static_cast<size_t>(rank)], at = split.displs[static_cast<size_t>(rank)];
    Tensor part = mine > 0 ? Tensor::empty({mine}, Category::temporary, "comm.shard") : Tensor();
    float unused = 0;
    reduce_scatter_sum(bucket.data(), mine > 0 ? part.data() : &unused, split.counts);
    if (mine > 0) unpack_mean(part.data(), params, first, last, at, at + mine, scale);
    part.reset();
    bucket.reset();
    bucket_start += elements;
  }
  return static_cast<int64_t>(buckets.size());
}

void broadcast_parameters(std::vector<Parameter>& params) {
  if (comm_size() == 1) return;
  for (Parameter& p : params) broadcast_from_rank0(p.value.raw_data(), p.value.numel() * dtype_bytes(p.value.dtype()));
}

}  // namespace reckon
