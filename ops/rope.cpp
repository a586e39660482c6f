#include "ops/rope.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

RopeTensors rope_tables_tensors(int64_t t, int64_t head_dim) {
  return {{"rope.cos", Category::activation, DType::f32, {t, head_dim / 2}, Lifetime::output},
          {"rope.sin", Category::activation, DType::f32, {t, head_dim / 2}, Lifetime::output}};
}

OpCount rope_tables_count(int64_t t, int64_t head_dim) {
  const CheckedInt half = head_dim / 2, entries = CheckedInt(t) * half;
  OpCount c;
  c.other_flops = (3 * entries + 2 * half).value();
  c.bytes_written = (2 * 4 * entries).value();
  return c;
}

OpCount rope_count(int64_t b, int64_t t, int64_t heads, int64_t head_dim, DType dtype) {
  const CheckedInt elements = CheckedInt(b) * t * heads * head_dim, s = dtype_bytes(dtype);
  OpCount c;
  c.other_flops = (3 * elements).value();
  c.bytes_read = (s * elements + 2 * 4 * CheckedInt(t) * (head_dim / 2)).value();
  c.bytes_written = (s * elements).value();
  return c;
}

RopeTables rope_tables(int64_t t, int64_t head_dim, double theta) {
  check_arg(t >= 1, "rope: sequence length is {}, allowed range is [1, ...)", t);
  check_arg(head_dim >= 2 && head_dim % 2 == 0, "rope: head_dim is {}, allowed: an even width ≥ 2", head_dim);
  check_arg(std::isfinite(theta) && theta > 0, "rope: rope_theta is {}, allowed: a finite number > 0", theta);
  const RopeTensors decl = rope_tables_tensors(t, head_dim);
  RopeTables out{decl.cos.allocate(""), decl.sin.allocate("")};
  OpRecord record("rope");
  const int64_t half = head_dim / 2;
  float *pc = out.cos.data(), *ps = out.sin.data();
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < t; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      pc[p * half + i] = static_cast<float>(std::cos(angle));
      ps[p * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  record.count = rope_tables_count(t, head_dim);
  return out;
}

namespace {

// sign = +1: forward rotation; −1: the opposite angle.
template <typename T>
void rotate(T* x, int64_t rows, int64_t t, int64_t heads, int64_t half, const float* cos, const float* sin,
            float sign) {
  const int64_t width = heads * 2 * half;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t p = r % t;
      T* v = x + r * width + h * 2 * half;
      const float *c = cos + p * half, *s = sin + p * half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = widen(v[i]), b = widen(v[i + half]), si = sign * s[i];
        v[i] = narrow<T>(a * c[i] - b * si);
        v[i + half] = narrow<T>(b * c[i] + a * si);
      }
    }
}

void rope_apply(const Tensor& x, int64_t heads, const RopeTables& tables, float sign, const char* what) {
  check_arg(x.dim() == 3 && x.is_contiguous() && heads >= 1 && x.size(2) % heads == 0,
            "rope {}: '{}' {} must be a contiguous (B, T, heads·head_dim) tensor with {} heads", what, x.name(),
            x.shape_str(), heads);
  const int64_t b = x.size(0), t = x.size(1), head_dim = x.size(2) / heads, half = tables.cos.size(1);
  check_arg(head_dim == 2 * half && t <= tables.cos.size(0),
            "rope {}: '{}' has heads of {} over {} positions; the tables are for heads of {} over {}", what, x.name(),
            head_dim, t, 2 * half, tables.cos.size(0));
  OpRecord record("rope");
  dispatch_floating(x.dtype(), [&](auto tag) {
    rotate(data_as<decltype(tag)>(x), b * t, t, heads, half, tables.cos.data(), tables.sin.data(), sign);
  });
  record.count = rope_count(b, t, heads, head_dim, x.dtype());
}

}  // namespace

void rope_forward(const Tensor& x, int64_t heads, const RopeTables& tables) {
  rope_apply(x, heads, tables, 1.0f, "forward");
}
void rope_backward(const Tensor& grad, int64_t heads, const RopeTables& tables) {
  rope_apply(grad, heads, tables, -1.0f, "backward");
}

}  // namespace reckon
