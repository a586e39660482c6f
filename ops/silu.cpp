#include "ops/silu.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/simd_math.h"
#include "runtime/checked.h"

namespace reckon {

OpCount silu_forward_count(int64_t n, DType t) {
  const CheckedInt s = dtype_bytes(t), N = n;
  return OpCount{0, 0, (4 * N).value(), (s * N).value(), (s * N).value(), 0.0};
}
OpCount silu_backward_count(int64_t n, DType t) {
  const CheckedInt s = dtype_bytes(t), N = n;
  return OpCount{0, 0, (9 * N).value(), (s * 2 * N).value(), (s * N).value(), 0.0};
}
OpCount swiglu_gate_forward_count(int64_t n, DType t) {
  const CheckedInt s = dtype_bytes(t), N = n;
  return OpCount{0, 0, (5 * N).value(), (s * 2 * N).value(), (s * N).value(), 0.0};
}
OpCount swiglu_gate_backward_count(int64_t n, DType t) {
  const CheckedInt s = dtype_bytes(t), N = n;
  return OpCount{0, 0, (12 * N).value(), (s * 3 * N).value(), (s * 2 * N).value(), 0.0};
}

template <typename T>
void silu_forward(T* out, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float xi = widen(x[i]);
    out[i] = narrow<T>(xi / (1.0f + exp_simd(-xi)));
  }
}

template <typename T>
void silu_backward(T* grad_x, const T* grad_out, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float xi = widen(x[i]);
    const float s = 1.0f / (1.0f + exp_simd(-xi));
    grad_x[i] = narrow<T>(widen(grad_out[i]) * (s * (1.0f + xi * (1.0f - s))));
  }
}

template <typename T>
void swiglu_gate_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float ai = widen(a[i]);
    out[i] = narrow<T>(ai / (1.0f + exp_simd(-ai)) * widen(b[i]));
  }
}

template <typename T>
void swiglu_gate_backward(T* grad_a, T* grad_b, const T* grad_out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float ai = widen(a[i]), dy = widen(grad_out[i]);
    const float s = 1.0f / (1.0f + exp_simd(-ai));
    const float silu = ai * s;
    grad_b[i] = narrow<T>(dy * silu);
    const float grad_silu = dy * widen(b[i]);
    grad_a[i] = narrow<T>(grad_silu * (s * (1.0f + ai * (1.0f - s))));
  }
}

template void silu_forward(float*, const float*, int64_t);
template void silu_forward(bf16*, const bf16*, int64_t);
template void silu_backward(float*, const float*, const float*, int64_t);
template void silu_backward(bf16*, const bf16*, const bf16*, int64_t);
template void swiglu_gate_forward(float*, const float*, const float*, int64_t);
template void swiglu_gate_forward(bf16*, const bf16*, const bf16*, int64_t);
template void swiglu_gate_backward(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_gate_backward(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t);

static void check_same(const Tensor& x, const Tensor& y, const char* op) {
  check_arg(x.is_contiguous() && y.is_contiguous() && x.numel() == y.numel() && x.dtype() == y.dtype(),
            "{}: '{}' {} {} and '{}' {} {} must be contiguous with equal element counts and dtypes", op, x.name(),
            x.shape_str(), dtype_name(x.dtype()), y.name(), y.shape_str(), dtype_name(y.dtype()));
}

void silu_forward(const Tensor& out, const Tensor& x) {
  check_same(out, x, "silu");
  OpRecord record("silu");
  dispatch_floating(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    silu_forward(data_as<T>(out), data_as<T>(x), x.numel());
  });
  record.count = silu_forward_count(x.numel(), x.dtype());
}

void silu_backward(const Tensor& grad_x, const Tensor& grad_out, const Tensor& x) {
  check_same(grad_x, x, "silu backward");
  check_same(grad_out, x, "silu backward");
  OpRecord record("silu");
  dispatch_floating(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    silu_backward(data_as<T>(grad_x), data_as<T>(grad_out), data_as<T>(x), x.numel());
  });
  record.count = silu_backward_count(x.numel(), x.dtype());
}

void swiglu_gate_forward(const Tensor& out, const Tensor& a, const Tensor& b) {
  check_same(out, a, "swiglu");
  check_same(b, a, "swiglu");
  OpRecord record("swiglu");
  dispatch_floating(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_gate_forward(data_as<T>(out), data_as<T>(a), data_as<T>(b), a.numel());
  });
  record.count = swiglu_gate_forward_count(a.numel(), a.dtype());
}

void swiglu_gate_backward(const Tensor& grad_a, const Tensor& grad_b, const Tensor& grad_out, const Tensor& a,
                          const Tensor& b) {
  for (const Tensor* t : {&grad_a, &grad_b, &grad_out, &b}) check_same(*t, a, "swiglu backward");
  OpRecord record("swiglu");
  dispatch_floating(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    swiglu_gate_backward(data_as<T>(grad_a), data_as<T>(grad_b), data_as<T>(grad_out), data_as<T>(a), data_as<T>(b),
                         a.numel());
  });
  record.count = swiglu_gate_backward_count(a.numel(), a.dtype());
}

}  // namespace reckon
