#include "ops/layernorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount layernorm_forward_count(int64_t n, int64_t d, bool bias, DType weight, DType out) {
  const CheckedInt N = n, D = d, with_bias = bias ? 1 : 0;
  OpCount c;
  c.other_flops = (N * (7 * D + 5 + with_bias * D)).value();
  c.bytes_read = (4 * N * D + dtype_bytes(weight) * D * (1 + with_bias)).value();
  c.bytes_written = (dtype_bytes(out) * N * D + 8 * N).value();
  return c;
}

OpCount layernorm_backward_count(int64_t n, int64_t d, bool bias, bool accumulate_grad_x, DType weight,
                                 DType grad_weight) {
  const CheckedInt N = n, D = d, acc = accumulate_grad_x ? 1 : 0, with_bias = bias ? 1 : 0;
  const CheckedInt gw = dtype_bytes(grad_weight);
  OpCount c;
  c.other_flops = (N * (17 * D + 2) + (with_bias + acc) * N * D).value();
  // reads dy, x, mean, rstd, g, the parameter gradients (and grad_x when accumulating); writes grad_x and them.
  c.bytes_read = (4 * (2 * N * D + 2 * N + acc * N * D) + dtype_bytes(weight) * D + gw * D * (1 + with_bias)).value();
  c.bytes_written = (4 * N * D + gw * D * (1 + with_bias)).value();
  return c;
}

LayernormTensors layernorm_forward_tensors(const Shape& x_shape, DType out_dtype) {
  const int64_t rows =
      TensorDecl{"", Category::activation, DType::f32, x_shape, Lifetime::output}.elements().value() / x_shape.back();
  return {{".out", Category::activation, out_dtype, x_shape, Lifetime::output},
          {".mean", Category::activation, DType::f32, {rows}, Lifetime::saved},
          {".rstd", Category::activation, DType::f32, {rows}, Lifetime::saved}};
}

namespace {

void check_rows(const Tensor& t, int64_t d, const char* what) {
  check_arg(t.is_contiguous() && t.size(-1) == d, "layernorm: {} '{}' {} must be contiguous with last dim {}", what,
            t.name(), t.shape_str(), d);
}

// G, O = float or bf16; b null: no bias.
template <typename G, typename O>
void layernorm_forward_kernel(O* po, float* pm, float* pr, const float* px, const G* g, const G* b, int64_t n,
                              int64_t d, float eps) {
  const float fd = static_cast<float>(d);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = px + i * d;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < d; ++j) sum += xi[j];
    const float mu = sum / fd;
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t j = 0; j < d; ++j) sum_sq += (xi[j] - mu) * (xi[j] - mu);
    const float r = 1.0f / std::sqrt(sum_sq / fd + eps);
    pm[i] = mu;
    pr[i] = r;
    O* oi = po + i * d;
    if (b != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) oi[j] = narrow<O>((xi[j] - mu) * r * widen(g[j]) + widen(b[j]));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) oi[j] = narrow<O>((xi[j] - mu) * r * widen(g[j]));
    }
  }
}

template <typename G>
void layernorm_grad_x(float* dx, const float* dy, const float* px, const float* pm, const float* pr, const G* g,
                      int64_t n, int64_t d, bool accumulate_grad_x) {
  const float fd = static_cast<float>(d);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = px + i * d;
    const float* dyi = dy + i * d;
    float* dxi = dx + i * d;
    const float mu = pm[i], r = pr[i];
    float sum_e = 0.0f, sum_ex = 0.0f;
#pragma omp simd reduction(+ : sum_e, sum_ex)
    for (int64_t j = 0; j < d; ++j) {
      const float e = widen(g[j]) * dyi[j];
      sum_e += e;
      sum_ex += e * ((xi[j] - mu) * r);
    }
    const float mean_e = sum_e / fd, mean_ex = sum_ex / fd;
    if (accumulate_grad_x) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dxi[j] += (widen(g[j]) * dyi[j] - mean_e - ((xi[j] - mu) * r) * mean_ex) * r;
    } else {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dxi[j] = (widen(g[j]) * dyi[j] - mean_e - ((xi[j] - mu) * r) * mean_ex) * r;
    }
  }
}

// grad_weight (and grad_bias): threads own column ranges and sum rows in order into float32 blocks, then add them
// once (one rounding for bf16 gradients); the result does not depend on the thread count. db null: no bias.
template <typename GW>
void layernorm_grad_params(GW* dg, GW* db, const float* dy, const float* px, const float* pm, const float* pr,
                           int64_t n, int64_t d) {
  constexpr int64_t kBlock = 256;
#pragma omp parallel
  {
    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t chunk = (d + nthreads - 1) / nthreads;
    const int64_t c0 = std::min(d, tid * chunk), c1 = std::min(d, c0 + chunk);
    float acc_g[kBlock], acc_b[kBlock];
    for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
      const int64_t len = std::min(kBlock, c1 - b0);
      std::fill_n(acc_g, len, 0.0f);
      std::fill_n(acc_b, len, 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float mu = pm[i], r = pr[i];
        const float* xi = px + i * d + b0;
        const float* dyi = dy + i * d + b0;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) acc_g[j] += dyi[j] * ((xi[j] - mu) * r);
        if (db != nullptr) {
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) acc_b[j] += dyi[j];
        }
      }
      for (int64_t j = 0; j < len; ++j) dg[b0 + j] = narrow<GW>(widen(dg[b0 + j]) + acc_g[j]);
      if (db != nullptr) {
        for (int64_t j = 0; j < len; ++j) db[b0 + j] = narrow<GW>(widen(db[b0 + j]) + acc_b[j]);
      }
    }
  }
}

}  // namespace

Tensor layernorm_forward(LayernormSaved& saved, const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                         std::string_view name, DType out_dtype) {
  check_arg(weight.dim() == 1, "layernorm: weight '{}' must be (D,), got {}", weight.name(), weight.shape_str());
  const int64_t d = weight.size(0), n = x.numel() / d;
  check_rows(x, d, "x");
  check_arg(!bias.defined() || (bias.shape() == weight.shape() && bias.dtype() == weight.dtype()),
            "layernorm: bias '{}' must match weight {} {}", bias.defined() ? bias.name() : "", weight.shape_str(),
            dtype_name(weight.dtype()));
  check_arg(eps > 0.0f && std::isfinite(eps), "layernorm: eps is {}, allowed range is (0, inf)", eps);
  const std::string prefix(name);
  const LayernormTensors decl = layernorm_forward_tensors(x.shape(), out_dtype);
  Tensor out = decl.out.allocate(prefix);
  Tensor mean = decl.mean.allocate(prefix);
  Tensor rstd = decl.rstd.allocate(prefix);
  OpRecord record("layernorm");
  dispatch_floating(weight.dtype(), [&](auto g_tag) {
    dispatch_floating(out_dtype, [&](auto o_tag) {
      using G = decltype(g_tag);
      using O = decltype(o_tag);
      layernorm_forward_kernel(data_as<O>(out), mean.data(), rstd.data(), x.data(), data_as<G>(weight),
                               bias.defined() ? data_as<G>(bias) : nullptr, n, d, eps);
    });
  });
  record.count = layernorm_forward_count(n, d, bias.defined(), weight.dtype(), out_dtype);
  saved.x = x;
  saved.mean = mean;
  saved.rstd = rstd;
  return out;
}

void layernorm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                        const Tensor& grad_out, LayernormSaved& saved, const Tensor& weight, bool accumulate_grad_x) {
  check_arg(saved.x.defined() && saved.mean.defined() && saved.rstd.defined(),
            "layernorm backward: nothing saved (forward not run?)");
  const int64_t d = weight.size(0), n = saved.x.numel() / d;
  check_rows(grad_x, d, "grad_x");
  check_rows(grad_out, d, "grad_out");
  check_arg(grad_x.numel() == n * d && grad_out.numel() == n * d, "layernorm backward: grad tensors must hold {} x {}",
            n, d);
  for (const Tensor* t : {&grad_weight, &grad_bias}) {
    check_arg(!t->defined() || (t->numel() == d && t->is_contiguous() && t->dtype() == grad_weight.dtype()),
              "layernorm backward: '{}' must hold {} of {}", t->defined() ? t->name() : "", d,
              dtype_name(grad_weight.dtype()));
  }
  OpRecord record("layernorm");
  dispatch_floating(weight.dtype(), [&](auto g_tag) {
    using G = decltype(g_tag);
    layernorm_grad_x(grad_x.data(), grad_out.data(), saved.x.data(), saved.mean.data(), saved.rstd.data(),
                     data_as<G>(weight), n, d, accumulate_grad_x);
  });
  dispatch_floating(grad_weight.dtype(), [&](auto gw_tag) {
    using GW = decltype(gw_tag);
    layernorm_grad_params(data_as<GW>(grad_weight), grad_bias.defined() ? data_as<GW>(grad_bias) : nullptr,
                          grad_out.data(), saved.x.data(), saved.mean.data(), saved.rstd.data(), n, d);
  });
  record.count =
      layernorm_backward_count(n, d, grad_bias.defined(), accumulate_grad_x, weight.dtype(), grad_weight.dtype());
  saved.x.reset();
  saved.mean.reset();
  saved.rstd.reset();
}

}  // namespace reckon
