// Cast: out = x converted between float32 and bfloat16 (round to nearest even; runtime/bf16.h). N elements.
// Mixed precision's copies go through here — the autocast weight cache, bf16 copies of activations, gradients
// cast back — so every byte a cast moves is counted under op "cast" in the phase it runs in.
// Backward of a cast is a cast the other way (the gradient of a rounding is taken as the identity, as in
// PyTorch).
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// out (allocated as `category`, `out_name`, dtype `to`) = x cast to `to`. x contiguous, float32 or bfloat16.
Tensor cast(const Tensor& x, DType to, Category category, std::string_view out_name);
// dst = src cast to dst's dtype, into existing storage (e.g. a parameter's bf16 working copy). Same shape, both
// contiguous.
void cast_into(const Tensor& dst, const Tensor& src);
// n float32 elements rounded into bf16 storage that is part of a larger tensor (ZeRO-3's shard into its place in
// the gathered bf16 parameter). Counted as one cast of n elements.
void cast_into(bf16* dst, const float* src, int64_t n);

// A cast of n elements: 0 FLOPs (a rounding is not arithmetic in the FLOP convention); reads n elements of
// `from`, writes n of `to` (4 or 2 bytes each).
OpCount cast_count(int64_t n, DType from, DType to);
// What cast() allocates: out (x's shape, dtype `to`, `category`; output), named by the caller.
TensorDecl cast_tensor(const Shape& shape, DType to, Category category);

}  // namespace reckon
