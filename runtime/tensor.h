// Tensor: float32 (or bfloat16, or int32 for token ids), 1 to 4 dims, shape + strides (views share storage, no copies),
// int64_t sizes. Storage is 64-byte aligned and owned through the tracking allocator, always with a category and a name
// (e.g. "layers.3.attn.probs"); it is freed when the last tensor viewing it goes away.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/bf16.h"

namespace reckon {

constexpr int kMaxDims = 4;
using Shape = std::vector<int64_t>;

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (no storage)

  // Uninitialised / zero-filled storage for a contiguous tensor of `shape`.
  // Throws std::invalid_argument (naming the tensor, the dim and the allowed range) for 0 or > 4 dims,
  // dims < 1, or a byte size that overflows.
  static Tensor empty(const Shape& shape, Category category, std::string_view name, DType dtype = DType::f32);
  static Tensor zeros(const Shape& shape, Category category, std::string_view name, DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  float* data() const;        // f32 tensors only (throws std::invalid_argument otherwise)
  int32_t* data_i32() const;  // i32 tensors only
  bf16* data_bf16() const;    // bf16 tensors only
  void* raw_data() const;     // any dtype: the first element of the view (for oneDNN memory objects)
  DType dtype() const { return dtype_; }
  int dim() const { return ndim_; }
  int64_t size(int d) const;    // negative d counts from the end, like PyTorch
  int64_t stride(int d) const;  // in elements
  Shape shape() const { return Shape(sizes_.begin(), sizes_.begin() + ndim_); }
  Shape strides() const { return Shape(strides_.begin(), strides_.begin() + ndim_); }
  int64_t numel() const;
  bool is_contiguous() const;
  int64_t offset() const { return offset_; }

  const std::string& name() const;
  Category category() const;
  int64_t storage_bytes() const;  // requested bytes of the underlying storage
  std::string shape_str() const;  // "(2, 3, 4)"

  // Views (no copies). view(): same elements, new contiguous shape (tensor must be contiguous).
  Tensor view(const Shape& shape) const;
  Tensor transpose(int d0, int d1) const;
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  void fill(float value) const;  // every element of the view (f32; bf16 gets the value rounded to bf16)
  // Every byte of a contiguous view set to 0, split over the OpenMP threads when large (one thread leaves a
  // memset at a fraction of the memory bandwidth). Throws std::invalid_argument for a non-contiguous view.
  void zero_() const;
  // Drop this handle; the storage is freed once no tensor views it.
  void reset() {
    storage_.reset();
    ndim_ = 0;
  }

 private:
  struct Storage;
  void set_contiguous_shape(const Shape& shape);  // sizes + row-major strides
  std::shared_ptr<Storage> storage_;
  std::array<int64_t, kMaxDims> sizes_{};
  std::array<int64_t, kMaxDims> strides_{};
  int64_t offset_ = 0;
  int ndim_ = 0;
  DType dtype_ = DType::f32;
};

// The data of a float32 or bf16 tensor as T* (float or bf16); throws std::invalid_argument on a dtype mismatch.
template <typename T>
T* data_as(const Tensor& t) {
  if constexpr (std::is_same_v<T, bf16>)
    return t.data_bf16();
  else
    return t.data();
}

// Calls f(T{}) with T = float or bf16 for a floating dtype, so one templated kernel serves both:
//   dispatch_floating(x.dtype(), [&](auto tag) { using T = decltype(tag); kernel(data_as<T>(x), …); });
template <typename F>
void dispatch_floating(DType dtype, F&& f) {
  if (dtype == DType::bf16)
    f(bf16{});
  else
    f(0.0f);
}

// Number of elements of a shape; throws std::invalid_argument (naming `what`) for bad dims or overflow.
int64_t checked_numel(const Shape& shape, std::string_view what);

}  // namespace reckon
