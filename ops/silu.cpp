#include "ops/silu.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/simd_math.h"

namespace reckon {

OpCount silu_forward_count(int64_t n) { return OpCount{0, 0, 4 * n, 4 * n, 4 * n, 0.0}; }
OpCount silu_backward_count(int64_t n) { return OpCount{0, 0, 9 * n, 4 * 2 * n, 4 * n, 0.0}; }
OpCount swiglu_gate_forward_count(int64_t n) { return OpCount{0, 0, 5 * n, 4 * 2 * n, 4 * n, 0.0}; }
OpCount swiglu_gate_backward_count(int64_t n) { return OpCount{0, 0, 12 * n, 4 * 3 * n, 4 * 2 * n, 0.0}; }

void silu_forward(float* out, const float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] / (1.0f + exp_simd(-x[i]));
}

void silu_backward(float* grad_x, const float* grad_out, const float* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + exp_simd(-x[i]));
    grad_x[i] = grad_out[i] * (s * (1.0f + x[i] * (1.0f - s)));
  }
}

void swiglu_gate_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] / (1.0f + exp_simd(-a[i])) * b[i];
}

void swiglu_gate_backward(float* grad_a, float* grad_b, const float* grad_out, const float* a, const float* b,
                          int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + exp_simd(-a[i]));
    const float silu = a[i] * s;
    grad_b[i] = grad_out[i] * silu;
    const float grad_silu = grad_out[i] * b[i];
    grad_a[i] = grad_silu * (s * (1.0f + a[i] * (1.0f - s)));
  }
}

static void check_same(const Tensor& x, const Tensor& y, const char* op) {
  check_arg(x.is_contiguous() && y.is_contiguous() && x.numel() == y.numel(),
            "{}: '{}' {} and '{}' {} must be contiguous with equal element counts", op, x.name(), x.shape_str(),
            y.name(), y.shape_str());
}

void silu_forward(const Tensor& out, const Tensor& x) {
  check_same(out, x, "silu");
  OpRecord record("silu");
  silu_forward(out.data(), x.data(), x.numel());
  record.count = silu_forward_count(x.numel());
}

void silu_backward(const Tensor& grad_x, const Tensor& grad_out, const Tensor& x) {
  check_same(grad_x, x, "silu backward");
  check_same(grad_out, x, "silu backward");
  OpRecord record("silu");
  silu_backward(grad_x.data(), grad_out.data(), x.data(), x.numel());
  record.count = silu_backward_count(x.numel());
}

void swiglu_gate_forward(const Tensor& out, const Tensor& a, const Tensor& b) {
  check_same(out, a, "swiglu");
  check_same(b, a, "swiglu");
  OpRecord record("swiglu");
  swiglu_gate_forward(out.data(), a.data(), b.data(), a.numel());
  record.count = swiglu_gate_forward_count(a.numel());
}

void swiglu_gate_backward(const Tensor& grad_a, const Tensor& grad_b, const Tensor& grad_out, const Tensor& a,
                          const Tensor& b) {
  for (const Tensor* t : {&grad_a, &grad_b, &grad_out, &b}) check_same(*t, a, "swiglu backward");
  OpRecord record("swiglu");
  swiglu_gate_backward(grad_a.data(), grad_b.data(), grad_out.data(), a.data(), b.data(), a.numel());
  record.count = swiglu_gate_backward_count(a.numel());
}

}  // namespace reckon
