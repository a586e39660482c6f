// What one call of an op allocates, declared beside its kernel as a function of shapes and dtypes (ggml's
// op_size): the kernel allocates its tensors from these declarations, the memory replay (estimators/replay.cpp)
// takes their category, dtype and size from the same ones, and test_ops checks each op's allocator events
// against them. What an op counts is declared beside it too (`<op>_count`, runtime/counters.h's OpCount).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/allocator.h"
#include "runtime/checked.h"
#include "runtime/tensor.h"

namespace reckon {

// When a tensor an op allocates is freed:
//   output:    returned to the caller, who decides (a residual stream value, a matmul's input, …);
//   saved:     kept in the op's Saved struct until its backward uses it (freed there, or by the caller's drop);
//   temporary: freed before the call returns.
enum class Lifetime { output, saved, temporary };

struct TensorDecl {
  std::string_view suffix;  // appended to the call's name: ".rstd"; "" where the caller names the tensor
  Category category;
  DType dtype;
  Shape shape;
  Lifetime lifetime;

  CheckedInt elements() const {
    CheckedInt n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  // The tensor, named `name` + suffix.
  Tensor allocate(std::string_view name) const {
    return Tensor::empty(shape, category, std::string(name) + std::string(suffix), dtype);
  }
};

}  // namespace reckon
