#include "ops/activation.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>

#include "runtime/bf16.h"
#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/simd_math.h"

namespace reckon {

namespace {

// Each activation as three inline functions (inlined into the vectorised loops below) and the FLOPs each
// executes: value v, derivative d, and both from shared work.
struct Silu {
  static constexpr int64_t value_flops = 4, grad_flops = 8, both_flops = 9;
  static float value(float x) { return x / (1.0f + exp_simd(-x)); }
  static float grad(float x) {
    const float s = 1.0f / (1.0f + exp_simd(-x));
    return s * (1.0f + x * (1.0f - s));
  }
  static float value_and_grad(float x, float& d) {
    const float s = 1.0f / (1.0f + exp_simd(-x));
    d = s * (1.0f + x * (1.0f - s));
    return x * s;
  }
};

constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;
struct Gelu {
  static constexpr int64_t value_flops = 5, grad_flops = 10, both_flops = 11;
  static float value(float x) { return 0.5f * x * (1.0f + std::erf(x * kInvSqrt2)); }
  static float grad(float x) {
    const float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * exp_simd(-0.5f * (x * x));
    return cdf + x * pdf;
  }
  static float value_and_grad(float x, float& d) {
    const float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * exp_simd(-0.5f * (x * x));
    d = cdf + x * pdf;
    return x * cdf;
  }
};

// √(2/π) and GELU's cubic coefficient (Hendrycks & Gimpel 2016, as PyTorch's approximate="tanh").
constexpr float kSqrt2OverPi = 0.79788456080286536f, kCubic = 0.044715f, kCubic3 = 3.0f * 0.044715f;
struct GeluTanh {
  static constexpr int64_t value_flops = 9, grad_flops = 17, both_flops = 18;
  static float value(float x) {
    const float u = kSqrt2OverPi * (x + kCubic * (x * x * x));
    return 0.5f * x * (1.0f + tanh_simd(u));
  }
  static float grad(float x) {
    float v = 0;
    return both(x, v);
  }
  static float value_and_grad(float x, float& d) {
    float v = 0;
    d = both(x, v);
    return v;
  }
  // The derivative, and the value from the same t (one multiply more).
  static float both(float x, float& v) {
    const float x2 = x * x;
    const float t = tanh_simd(kSqrt2OverPi * (x + kCubic * (x2 * x)));
    const float du = kSqrt2OverPi * (1.0f + kCubic3 * x2);
    const float one_plus_t = 1.0f + t, half_x = 0.5f * x;
    v = half_x * one_plus_t;
    return 0.5f * one_plus_t + half_x * (1.0f - t * t) * du;
  }
};

// The loops run over chunks of float32 spans. bf16 storage is staged: each chunk's inputs widened into float32
// buffers (one vector conversion each), the float32 loop run on them, the outputs rounded back with
// convert_to_bf16 (VCVTNEPS2BF16 where the CPU has it) — the same bits as widen / narrow element by element,
// without the rounding sequence inside the loop, which made the bf16 kernels slower than float32's.
constexpr int64_t kChunk = 1024;

template <typename T, size_t In, size_t Out, typename Span>
void for_each_chunk(int64_t n, const std::array<const T*, In>& in, const std::array<T*, Out>& out, Span span) {
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    std::array<const float*, In> x;
    std::array<float*, Out> y;
    if constexpr (std::is_same_v<T, float>) {
      for (size_t i = 0; i < In; ++i) x[i] = in[i] + c0;
      for (size_t o = 0; o < Out; ++o) y[o] = out[o] + c0;
      span(x, y, len);
    } else {
      alignas(64) float staged_in[In][kChunk], staged_out[Out][kChunk];
      for (size_t i = 0; i < In; ++i) {
        convert_to_float(staged_in[i], in[i] + c0, len);
        x[i] = staged_in[i];
      }
      for (size_t o = 0; o < Out; ++o) y[o] = staged_out[o];
      span(x, y, len);
      for (size_t o = 0; o < Out; ++o) convert_to_bf16(out[o] + c0, staged_out[o], len);
    }
  }
}

template <typename A, typename T>
void plain_forward(T* out, const T* x, int64_t n) {
  for_each_chunk<T, 1, 1>(n, {x}, {out}, [](const auto& in, const auto& y, int64_t len) {
    const float* __restrict x0 = in[0];
    float* __restrict y0 = y[0];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) y0[i] = A::value(x0[i]);
  });
}

template <typename A, typename T>
void plain_backward(T* grad_x, const T* grad_out, const T* x, int64_t n) {
  for_each_chunk<T, 2, 1>(n, {grad_out, x}, {grad_x}, [](const auto& in, const auto& y, int64_t len) {
    const float* __restrict dy = in[0], * __restrict x0 = in[1];
    float* __restrict dx = y[0];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dx[i] = dy[i] * A::grad(x0[i]);
  });
}

template <typename A, typename T>
void gated_forward(T* out, const T* a, const T* b, int64_t n) {
  for_each_chunk<T, 2, 1>(n, {a, b}, {out}, [](const auto& in, const auto& y, int64_t len) {
    const float* __restrict a0 = in[0], * __restrict b0 = in[1];
    float* __restrict y0 = y[0];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) y0[i] = A::value(a0[i]) * b0[i];
  });
}

template <typename A, typename T>
void gated_backward(T* grad_a, T* grad_b, const T* grad_out, const T* a, const T* b, int64_t n) {
  for_each_chunk<T, 3, 2>(n, {grad_out, a, b}, {grad_a, grad_b}, [](const auto& in, const auto& y, int64_t len) {
    const float* __restrict dy = in[0], * __restrict a0 = in[1], * __restrict b0 = in[2];
    float* __restrict da = y[0], * __restrict db = y[1];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      float d = 0;
      const float v = A::value_and_grad(a0[i], d);
      db[i] = dy[i] * v;
      da[i] = (dy[i] * b0[i]) * d;
    }
  });
}

// Runs f with the activation's functor type.
template <typename F>
void dispatch_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::silu:
      return f(Silu{});
    case Activation::gelu:
      return f(Gelu{});
    case Activation::gelu_tanh:
      return f(GeluTanh{});
  }
  throw std::logic_error("unknown activation");
}

struct Flops {
  int64_t value, grad, both;
};
Flops flops_of(Activation a) {
  Flops out{};
  dispatch_activation(a, [&](auto tag) {
    using A = decltype(tag);
    out = {A::value_flops, A::grad_flops, A::both_flops};
  });
  return out;
}

OpCount elementwise_count(int64_t flops_per_element, int64_t n, DType t, int64_t reads, int64_t writes) {
  const CheckedInt s = dtype_bytes(t), N = n;
  return OpCount{0, 0, (flops_per_element * N).value(), (s * reads * N).value(), (s * writes * N).value(), 0.0};
}

void check_same(const Tensor& x, const Tensor& y, const char* op) {
  check_arg(x.is_contiguous() && y.is_contiguous() && x.numel() == y.numel() && x.dtype() == y.dtype(),
            "{}: '{}' {} {} and '{}' {} {} must be contiguous with equal element counts and dtypes", op, x.name(),
            x.shape_str(), dtype_name(x.dtype()), y.name(), y.shape_str(), dtype_name(y.dtype()));
}

}  // namespace

const char* activation_op_name(Activation a, bool gated) {
  if (a == Activation::silu) return gated ? "swiglu" : "silu";
  return gated ? "geglu" : "gelu";
}

OpCount activation_forward_count(Activation a, int64_t n, DType t) {
  return elementwise_count(flops_of(a).value, n, t, 1, 1);
}
OpCount activation_backward_count(Activation a, int64_t n, DType t) {
  return elementwise_count(flops_of(a).grad + 1, n, t, 2, 1);
}
OpCount gated_activation_forward_count(Activation a, int64_t n, DType t) {
  return elementwise_count(flops_of(a).value + 1, n, t, 2, 1);
}
OpCount gated_activation_backward_count(Activation a, int64_t n, DType t) {
  return elementwise_count(flops_of(a).both + 3, n, t, 3, 2);
}

void activation_forward(Activation a, const Tensor& out, const Tensor& x) {
  check_same(out, x, activation_op_name(a, false));
  OpRecord record(activation_op_name(a, false));
  dispatch_activation(a, [&](auto act) {
    dispatch_floating(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      plain_forward<decltype(act)>(data_as<T>(out), data_as<T>(x), x.numel());
    });
  });
  record.count = activation_forward_count(a, x.numel(), x.dtype());
}

void activation_backward(Activation a, const Tensor& grad_x, const Tensor& grad_out, const Tensor& x) {
  check_same(grad_x, x, activation_op_name(a, false));
  check_same(grad_out, x, activation_op_name(a, false));
  OpRecord record(activation_op_name(a, false));
  dispatch_activation(a, [&](auto act) {
    dispatch_floating(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      plain_backward<decltype(act)>(data_as<T>(grad_x), data_as<T>(grad_out), data_as<T>(x), x.numel());
    });
  });
  record.count = activation_backward_count(a, x.numel(), x.dtype());
}

void gated_activation_forward(Activation a, const Tensor& out, const Tensor& gate, const Tensor& up) {
  check_same(out, gate, activation_op_name(a, true));
  check_same(up, gate, activation_op_name(a, true));
  OpRecord record(activation_op_name(a, true));
  dispatch_activation(a, [&](auto act) {
    dispatch_floating(gate.dtype(), [&](auto tag) {
      using T = decltype(tag);
      gated_forward<decltype(act)>(data_as<T>(out), data_as<T>(gate), data_as<T>(up), gate.numel());
    });
  });
  record.count = gated_activation_forward_count(a, gate.numel(), gate.dtype());
}

void gated_activation_backward(Activation a, const Tensor& grad_gate, const Tensor& grad_up, const Tensor& grad_out,
                               const Tensor& gate, const Tensor& up) {
  for (const Tensor* t : {&grad_gate, &grad_up, &grad_out, &up}) check_same(*t, gate, activation_op_name(a, true));
  OpRecord record(activation_op_name(a, true));
  dispatch_activation(a, [&](auto act) {
    dispatch_floating(gate.dtype(), [&](auto tag) {
      using T = decltype(tag);
      gated_backward<decltype(act)>(data_as<T>(grad_gate), data_as<T>(grad_up), data_as<T>(grad_out), data_as<T>(gate),
                                    data_as<T>(up), gate.numel());
    });
  });
  record.count = gated_activation_backward_count(a, gate.numel(), gate.dtype());
}

}  // namespace reckon
