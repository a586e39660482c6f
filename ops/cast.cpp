#include "ops/cast.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount cast_count(int64_t n, DType from, DType to) {
  OpCount c;
  c.bytes_read = (CheckedInt(dtype_bytes(from)) * n).value();
  c.bytes_written = (CheckedInt(dtype_bytes(to)) * n).value();
  return c;
}

// Contiguous chunks of whole 64-byte lines per thread; each converts with the vector kernel.
template <typename To, typename From>
static void convert_chunks(To* dst, const From* src, int64_t n) {
  const int64_t chunk = 16 * 1024;
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    if constexpr (std::is_same_v<To, bf16>)
      convert_to_bf16(dst + begin, src + begin, len);
    else
      convert_to_float(dst + begin, src + begin, len);
  }
}

void cast_into(const Tensor& dst, const Tensor& src) {
  const auto floating = [](DType t) { return t == DType::f32 || t == DType::bf16; };
  check_arg(floating(dst.dtype()) && floating(src.dtype()),
            "cast: '{}' is {} and '{}' is {}; allowed: float32, bfloat16", src.name(), dtype_name(src.dtype()),
            dst.name(), dtype_name(dst.dtype()));
  check_arg(dst.shape() == src.shape() && dst.is_contiguous() && src.is_contiguous(),
            "cast: src '{}' {} and dst '{}' {} must be contiguous with equal shapes", src.name(), src.shape_str(),
            dst.name(), dst.shape_str());
  OpRecord record("cast");
  const int64_t n = src.numel();
  if (src.dtype() == dst.dtype()) {
    std::copy_n(static_cast<const char*>(src.raw_data()), n * dtype_bytes(src.dtype()),
                static_cast<char*>(dst.raw_data()));
  } else if (dst.dtype() == DType::bf16) {
    convert_chunks(dst.data_bf16(), src.data(), n);
  } else {
    convert_chunks(dst.data(), src.data_bf16(), n);
  }
  record.count = cast_count(n, src.dtype(), dst.dtype());
}

void cast_into(bf16* dst, const float* src, int64_t n) {
  OpRecord record("cast");
  convert_chunks(dst, src, n);
  record.count = cast_count(n, DType::f32, DType::bf16);
}

TensorDecl cast_tensor(const Shape& shape, DType to, Category category) {
  return {"", category, to, shape, Lifetime::output};
}

Tensor cast(const Tensor& x, DType to, Category category, std::string_view out_name) {
  Tensor out = cast_tensor(x.shape(), to, category).allocate(out_name);
  cast_into(out, x);
  return out;
}

}  // namespace reckon
