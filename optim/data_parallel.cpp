#include "optim/data_parallel.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/comm.h"

namespace reckon {

int64_t all_reduce_gradients(std::vector<Parameter>& params, int64_t bucket_bytes) {
  const int ranks = comm_size();
  if (ranks == 1) return 0;
  const float scale = 1.0f / static_cast<float>(ranks);
  int64_t buckets = 0;
  for (size_t first = 0; first < params.size();) {
    // Parameters [first, last) fill one bucket.
    size_t last = first;
    int64_t elements = 0;
    while (last < params.size() && (last == first || 4 * (elements + params[last].grad.numel()) <= bucket_bytes)) {
      elements += params[last].grad.numel();
      ++last;
    }
    Tensor bucket = Tensor::empty({elements}, Category::temporary, fmt::format("comm.bucket.{}", buckets));
    float* b = bucket.data();
    int64_t off = 0;
    for (size_t i = first; i < last; ++i) {  // bf16 gradients are widened exactly: the sum runs in float32
      const Tensor& g = params[i].grad;
      const int64_t n = g.numel();
      if (g.dtype() == DType::bf16) convert_to_float(b + off, g.data_bf16(), n);
      else std::memcpy(b + off, g.data(), static_cast<size_t>(n) * 4);
      off += n;
    }
    all_reduce_sum(b, elements);
    off = 0;
    for (size_t i = first; i < last; ++i) {  // the mean, rounded once to a bf16 gradient
      const Tensor& g = params[i].grad;
      const int64_t n = g.numel();
      dispatch_floating(g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T* out = data_as<T>(g);
        for (int64_t k = 0; k < n; ++k) out[k] = narrow<T>(b[off + k] * scale);
      });
      off += n;
    }
    ++buckets;
    first = last;
  }
  return buckets;
}

void broadcast_parameters(std::vector<Parameter>& params) {
  if (comm_size() == 1) return;
  for (Parameter& p : params) broadcast_from_rank0(p.value.raw_data(), p.value.numel() * dtype_bytes(p.value.dtype()));
}

}  // namespace reckon
