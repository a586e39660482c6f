#include "runtime/tensor.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <omp.h>

namespace reckon {

struct Tensor::Storage {
  void* ptr = nullptr;
  int64_t bytes = 0;
  Category category;
  std::string name;
  ~Storage() { tracker().free(ptr); }
};

namespace {
// Largest element count whose bytes (at most 4 per element) still fit the allocator's limit.
constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 4 / 4;

std::string shape_to_string(const int64_t* sizes, int n) {
  std::string s = "(";
  for (int i = 0; i < n; ++i) s += fmt::format("{}{}", i ? ", " : "", sizes[i]);
  return s + (n == 1 ? ",)" : ")");
}
}  // namespace

int64_t checked_numel(const Shape& shape, std::string_view what) {
  if (shape.empty() || shape.size() > kMaxDims) {
    throw std::invalid_argument(
        fmt::format("{}: number of dims is {}, allowed range is [1, {}]", what, shape.size(), kMaxDims));
  }
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      throw std::invalid_argument(
          fmt::format("{}: dim {} is {}, allowed range is [1, {}]", what, i, shape[i], kMaxElements));
    }
    if (__builtin_mul_overflow(n, shape[i], &n) || n > kMaxElements) {
      throw std::invalid_argument(fmt::format("{}: shape {} has more elements than the allowed {}", what,
                                              shape_to_string(shape.data(), static_cast<int>(shape.size())),
                                              kMaxElements));
    }
  }
  return n;
}

Tensor Tensor::empty(const Shape& shape, Category category, std::string_view name, DType dtype) {
  const int64_t n = checked_numel(shape, fmt::format("tensor '{}'", name));
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->bytes = n * dtype_bytes(dtype);
  t.storage_->category = category;
  t.storage_->name = std::string(name);
  t.storage_->ptr = tracker().allocate(t.storage_->bytes, category, name, dtype);
  t.dtype_ = dtype;
  t.set_contiguous_shape(shape);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Category category, std::string_view name, DType dtype) {
  Tensor t = empty(shape, category, name, dtype);
  t.zero_();
  return t;
}

void Tensor::zero_() const {
  if (!is_contiguous()) throw std::invalid_argument(fmt::format("zero_: {} is not contiguous", name()));
  auto* first = static_cast<std::byte*>(raw_data());
  const int64_t bytes = numel() * dtype_bytes(dtype_);
  constexpr int64_t kSerialBytes = int64_t{1} << 20;  // below this, the threads' start costs more than they save
  if (bytes < kSerialBytes || omp_in_parallel()) {
    std::memset(first, 0, static_cast<size_t>(bytes));
    return;
  }
#pragma omp parallel
  {
    // Equal 4 KiB-aligned spans: each thread writes (and first-touches) whole pages.
    const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t pages = (bytes + 4095) / 4096;
    const int64_t begin = std::min(bytes, pages * me / threads * 4096);
    const int64_t end = std::min(bytes, pages * (me + 1) / threads * 4096);
    if (end > begin) std::memset(first + begin, 0, static_cast<size_t>(end - begin));
  }
}

void Tensor::set_contiguous_shape(const Shape& shape) {
  ndim_ = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int d = ndim_ - 1; d >= 0; --d) {
    sizes_[d] = shape[static_cast<size_t>(d)];
    strides_[d] = stride;
    stride *= sizes_[d];
  }
}

int64_t dtype_bytes(DType dtype) { return dtype == DType::bf16 ? 2 : 4; }

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "float32";
    case DType::i32:
      return "int32";
    case DType::bf16:
      return "bfloat16";
  }
  return "?";
}

void PrintTo(DType dtype, std::ostream* os) { *os << dtype_name(dtype); }

namespace {
void check_dtype(const Tensor& t, DType actual, DType wanted) {
  if (actual != wanted) {
    throw std::invalid_argument(
        fmt::format("tensor '{}' is {}, not {}", t.name(), dtype_name(actual), dtype_name(wanted)));
  }
}
}  // namespace

float* Tensor::data() const {
  if (!storage_) return nullptr;
  check_dtype(*this, dtype_, DType::f32);
  return static_cast<float*>(storage_->ptr) + offset_;
}

int32_t* Tensor::data_i32() const {
  if (!storage_) return nullptr;
  check_dtype(*this, dtype_, DType::i32);
  return static_cast<int32_t*>(storage_->ptr) + offset_;
}

void* Tensor::raw_data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->ptr) + offset_ * dtype_bytes(dtype_);
}

bf16* Tensor::data_bf16() const {
  if (!storage_) return nullptr;
  check_dtype(*this, dtype_, DType::bf16);
  return static_cast<bf16*>(storage_->ptr) + offset_;
}

static int normalize_dim(int d, int ndim) {
  const int nd = d < 0 ? d + ndim : d;
  if (nd < 0 || nd >= ndim) {
    throw std::invalid_argument(fmt::format("dim: {} is outside the allowed range [{}, {}]", d, -ndim, ndim - 1));
  }
  return nd;
}

int64_t Tensor::size(int d) const { return sizes_[normalize_dim(d, ndim_)]; }
int64_t Tensor::stride(int d) const { return strides_[normalize_dim(d, ndim_)]; }

int64_t Tensor::numel() const {
  if (!storage_) return 0;
  int64_t n = 1;
  for (int d = 0; d < ndim_; ++d) n *= sizes_[d];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim_ - 1; d >= 0; --d) {
    if (sizes_[d] != 1 && strides_[d] != expected) return false;
    expected *= sizes_[d];
  }
  return true;
}

const std::string& Tensor::name() const {
  static const std::string undefined = "<undefined>";
  return storage_ ? storage_->name : undefined;
}

Category Tensor::category() const { return storage_ ? storage_->category : Category::temporary; }
int64_t Tensor::storage_bytes() const { return storage_ ? storage_->bytes : 0; }
std::string Tensor::shape_str() const { return shape_to_string(sizes_.data(), ndim_); }

Tensor Tensor::view(const Shape& shape) const {
  if (!is_contiguous()) {
    throw std::invalid_argument(fmt::format("view of '{}': tensor {} is not contiguous", name(), shape_str()));
  }
  const int64_t n = checked_numel(shape, fmt::format("view of '{}'", name()));
  if (n != numel()) {
    throw std::invalid_argument(fmt::format("view of '{}': shape {} has {} elements, tensor {} has {}", name(),
                                            shape_to_string(shape.data(), static_cast<int>(shape.size())), n,
                                            shape_str(), numel()));
  }
  Tensor t = *this;
  t.set_contiguous_shape(shape);
  return t;
}

Tensor Tensor::transpose(int d0, int d1) const {
  Tensor t = *this;
  const int a = normalize_dim(d0, ndim_), b = normalize_dim(d1, ndim_);
  std::swap(t.sizes_[a], t.sizes_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  checked_numel(shape, fmt::format("as_strided of '{}'", name()));
  if (strides.size() != shape.size()) {
    throw std::invalid_argument(
        fmt::format("as_strided of '{}': {} strides for {} dims", name(), strides.size(), shape.size()));
  }
  // The furthest element the view touches must lie inside the storage.
  int64_t last = offset_ + offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (strides[d] < 0) {
      throw std::invalid_argument(
          fmt::format("as_strided of '{}': stride {} is {}, allowed range is [0, ...)", name(), d, strides[d]));
    }
    last += (shape[d] - 1) * strides[d];
  }
  const int64_t capacity = storage_bytes() / dtype_bytes(dtype_);
  if (offset_ + offset < 0 || last >= capacity) {
    throw std::invalid_argument(
        fmt::format("as_strided of '{}': view reaches element {}, storage has {}", name(), last, capacity));
  }
  Tensor t = *this;
  t.ndim_ = static_cast<int>(shape.size());
  t.offset_ = offset_ + offset;
  for (int d = 0; d < t.ndim_; ++d) {
    t.sizes_[d] = shape[static_cast<size_t>(d)];
    t.strides_[d] = strides[static_cast<size_t>(d)];
  }
  return t;
}

void Tensor::fill(float value) const {
  // Strided or not: walk all 4 (padded) dims; f32 or bf16 elements.
  std::array<int64_t, kMaxDims> s{1, 1, 1, 1}, st{0, 0, 0, 0};
  for (int d = 0; d < ndim_; ++d) {
    s[kMaxDims - ndim_ + d] = sizes_[d];
    st[kMaxDims - ndim_ + d] = strides_[d];
  }
  auto fill_with = [&](auto* p, auto v) {
    if (is_contiguous()) {
      const int64_t n = numel();
      for (int64_t i = 0; i < n; ++i) p[i] = v;
      return;
    }
    for (int64_t a = 0; a < s[0]; ++a)
      for (int64_t b = 0; b < s[1]; ++b)
        for (int64_t c = 0; c < s[2]; ++c)
          for (int64_t d = 0; d < s[3]; ++d) p[a * st[0] + b * st[1] + c * st[2] + d * st[3]] = v;
  };
  if (dtype_ == DType::bf16)
    fill_with(data_bf16(), to_bf16(value));
  else
    fill_with(data(), value);
}

}  // namespace reckon
