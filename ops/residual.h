// Residual add: out = a + b.   N = number of elements.
// Backward needs no op: the gradient of the sum flows unchanged to both inputs, so the model keeps one
// residual-stream gradient and lets each branch accumulate (`+=`) into it.
#pragma once

#include <string_view>

#include "runtime/contract.h"
#include "runtime/counters.h"
#include "runtime/tensor.h"

namespace reckon {

// out = a + b (same shape, contiguous), allocated as activation `out_name`. Saves nothing.
Tensor residual_forward(const Tensor& a, const Tensor& b, std::string_view out_name);

// forward: N adds; reads 2N, writes N elements.
OpCount residual_forward_count(int64_t n);
// What it allocates: the sum (a's shape, float32, activation; output), named by the caller.
TensorDecl residual_forward_tensor(const Shape& shape);

}  // namespace reckon
