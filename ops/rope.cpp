#include "ops/rope.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

RopeTensors rope_tables_tensors(int64_t t, int64_t head_dim) {
  return {{"rope.cos", Category::activation, DType::f32, {t, head_dim / 2}, Lifetime::output},
          {"rope.sin", Category::activation, DType::f32, {t, head_dim / 2}, Lifetime::output}};
}

std::vector<double> rope_inverse_frequencies(int64_t head_dim, const RopeFrequencies& f, int64_t* flops) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  int64_t n = 0;
  const double pi = std::acos(-1.0);
  for (int64_t i = 0; i < half; ++i) {
    double x = 1.0 / std::pow(f.theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
    n += 2;
    if (f.scaling == RopeScaling::linear) {
      x /= f.factor;
      n += 1;
    } else if (f.scaling == RopeScaling::llama3) {
      const double context = static_cast<double>(f.original_context);
      const double wavelength = 2 * pi / x;
      n += 1;
      if (wavelength > context / f.low_freq_factor) {  // long wavelengths: scaled
        x /= f.factor;
        n += 1;
      } else if (wavelength >= context / f.high_freq_factor) {  // the band between: blended
        const double s = (context / wavelength - f.low_freq_factor) / (f.high_freq_factor - f.low_freq_factor);
        x = (1 - s) * x / f.factor + s * x;
        n += 8;  // s: a divide, a subtract, a subtract, a divide; blend: a subtract, multiply, divide, multiply-add
      }
    }
    inv[static_cast<size_t>(i)] = x;
  }
  if (flops != nullptr) *flops = n;
  return inv;
}

OpCount rope_tables_count(int64_t t, int64_t head_dim, const RopeFrequencies& f) {
  const CheckedInt half = head_dim / 2, entries = CheckedInt(t) * half;
  int64_t frequency_flops = 0;
  rope_inverse_frequencies(head_dim, f, &frequency_flops);
  OpCount c;
  c.other_flops = (3 * entries + frequency_flops).value();
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

RopeTables rope_tables(int64_t t, int64_t head_dim, const RopeFrequencies& f) {
  check_arg(t >= 1, "rope: sequence length is {}, allowed range is [1, ...)", t);
  check_arg(head_dim >= 2 && head_dim % 2 == 0, "rope: head_dim is {}, allowed: an even width ≥ 2", head_dim);
  check_arg(std::isfinite(f.theta) && f.theta > 0, "rope: rope_theta is {}, allowed: a finite number > 0", f.theta);
  check_arg(f.scaling == RopeScaling::none || (std::isfinite(f.factor) && f.factor > 0),
            "rope: rope_factor is {}, allowed: a finite number > 0", f.factor);
  check_arg(f.scaling != RopeScaling::llama3 ||
                (f.original_context >= 1 && f.low_freq_factor > 0 && f.high_freq_factor > f.low_freq_factor),
            "rope: llama3 scaling needs rope_original_max_position ≥ 1 and 0 < rope_low_freq_factor < "
            "rope_high_freq_factor, got {}, {}, {}",
            f.original_context, f.low_freq_factor, f.high_freq_factor);
  const std::vector<double> inv = rope_inverse_frequencies(head_dim, f);
  const RopeTensors decl = rope_tables_tensors(t, head_dim);
  RopeTables out{decl.cos.allocate(""), decl.sin.allocate("")};
  OpRecord record("rope");
  const int64_t half = head_dim / 2;
  float *pc = out.cos.data(), *ps = out.sin.data();
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = inv[static_cast<size_t>(i)];
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < t; ++p) {
      const double angle = static_cast<double>(p) * inv_freq;
      pc[p * half + i] = static_cast<float>(std::cos(angle));
      ps[p * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  record.count = rope_tables_count(t, head_dim, f);
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
