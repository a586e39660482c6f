#include "ops/residual.h"

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount residual_forward_count(int64_t n) {
  const CheckedInt N = n;
  OpCount c;
  c.other_flops = n;
  c.bytes_read = (4 * 2 * N).value();
  c.bytes_written = (4 * N).value();
  return c;
}

TensorDecl residual_forward_tensor(const Shape& shape) {
  return {"", Category::activation, DType::f32, shape, Lifetime::output};
}

Tensor residual_forward(const Tensor& a, const Tensor& b, std::string_view out_name) {
  check_arg(a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous(),
            "residual: a '{}' {} and b '{}' {} must be contiguous with equal shapes", a.name(), a.shape_str(), b.name(),
            b.shape_str());
  Tensor out = residual_forward_tensor(a.shape()).allocate(out_name);
  OpRecord record("residual");
  const int64_t n = a.numel();
  const float* pa = a.data();
  const float* pb = b.data();
  float* po = out.data();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
  record.count = residual_forward_count(n);
  return out;
}

}  // namespace reckon
