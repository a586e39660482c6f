#include "ops/rmsnorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount rmsnorm_forward_count(int64_t n, int64_t d, DType weight, DType out, DType x) {
  const CheckedInt N = n, D = d;
  OpCount c;
  c.other_flops = (N * (4 * D + 4)).value();
  c.bytes_read = (dtype_bytes(x) * N * D + dtype_bytes(weight) * D).value();
  c.bytes_written = (dtype_bytes(out) * N * D + 4 * N).value();
  return c;
}

OpCount rmsnorm_backward_count(int64_t n, int64_t d, bool accumulate_grad_x, DType weight, DType grad_weight, DType x) {
  const CheckedInt N = n, D = d, acc = accumulate_grad_x ? 1 : 0, X = dtype_bytes(x);
  OpCount c;
  c.other_flops = (N * (10 * D + 4) + acc * N * D).value();
  // reads dy, x, g, rstd, grad_weight (and grad_x when accumulating); writes grad_x, grad_weight.
  c.bytes_read = (X * (2 * N * D + acc * N * D) + 4 * N + (dtype_bytes(weight) + dtype_bytes(grad_weight)) * D).value();
  c.bytes_written = (X * N * D + dtype_bytes(grad_weight) * D).value();
  return c;
}

RmsnormTensors rmsnorm_forward_tensors(const Shape& x_shape, DType out_dtype) {
  const int64_t rows =
      TensorDecl{"", Category::activation, DType::f32, x_shape, Lifetime::output}.elements().value() / x_shape.back();
  return {{".out", Category::activation, out_dtype, x_shape, Lifetime::output},
          {".rstd", Category::activation, DType::f32, {rows}, Lifetime::saved}};
}

static void check_rows(const Tensor& t, int64_t d, const char* what) {
  check_arg(t.is_contiguous() && t.size(-1) == d, "rmsnorm: {} '{}' {} must be contiguous with last dim {}", what,
            t.name(), t.shape_str(), d);
}

// y = x · rstd · g per row; G, O, X = float or bf16 (arithmetic in float32).
template <typename G, typename O, typename X>
static void rmsnorm_forward_kernel(O* po, float* pr, const X* px, const G* g, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const X* xi = px + i * d;
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t j = 0; j < d; ++j) sum_sq += widen(xi[j]) * widen(xi[j]);
    const float r = 1.0f / std::sqrt(sum_sq / static_cast<float>(d) + eps);
    pr[i] = r;
    O* oi = po + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) oi[j] = narrow<O>(widen(xi[j]) * r * widen(g[j]));
  }
}

Tensor rmsnorm_forward(RmsnormSaved& saved, const Tensor& x, const Tensor& weight, float eps, std::string_view name,
                       DType out_dtype) {
  check_arg(weight.dim() == 1, "rmsnorm: weight '{}' must be (D,), got {}", weight.name(), weight.shape_str());
  const int64_t d = weight.size(0), n = x.numel() / d;
  check_rows(x, d, "x");
  check_arg(eps > 0.0f && std::isfinite(eps), "rmsnorm: eps is {}, allowed range is (0, inf)", eps);
  const std::string prefix(name);
  const RmsnormTensors decl = rmsnorm_forward_tensors(x.shape(), out_dtype);
  Tensor out = decl.out.allocate(prefix);
  Tensor rstd = decl.rstd.allocate(prefix);
  OpRecord record("rmsnorm");
  dispatch_floating(weight.dtype(), [&](auto g_tag) {
    dispatch_floating(out_dtype, [&](auto o_tag) {
      dispatch_floating(x.dtype(), [&](auto x_tag) {
        using G = decltype(g_tag);
        using O = decltype(o_tag);
        using X = decltype(x_tag);
        rmsnorm_forward_kernel(data_as<O>(out), rstd.data(), data_as<X>(x), data_as<G>(weight), n, d, eps);
      });
    });
  });
  record.count = rmsnorm_forward_count(n, d, weight.dtype(), out_dtype, x.dtype());
  saved.x = x;
  saved.rstd = rstd;
  return out;
}

template <typename G, typename GW, typename X>
static void rmsnorm_backward_kernel(X* dx, GW* dg, const X* dy, const X* px, const float* pr, const G* g, int64_t n,
                                    int64_t d, bool accumulate_grad_x) {
  const float inv_d = 1.0f / static_cast<float>(d);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const X* xi = px + i * d;
    const X* dyi = dy + i * d;
    X* dxi = dx + i * d;
    const float r = pr[i];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += widen(dyi[j]) * widen(g[j]) * widen(xi[j]);
    const float c = r * r * r * dot * inv_d;
    if (accumulate_grad_x) {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j)
        dxi[j] = narrow<X>(widen(dxi[j]) + ((widen(g[j]) * widen(dyi[j])) * r - widen(xi[j]) * c));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dxi[j] = narrow<X>((widen(g[j]) * widen(dyi[j])) * r - widen(xi[j]) * c);
    }
  }
  // grad_weight: threads own column ranges and sum rows in order into a float32 block of columns, then add it to
  // grad_weight once (one rounding for bf16 gradients); the result does not depend on the thread count.
  constexpr int64_t kBlock = 256;
#pragma omp parallel
  {
    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t chunk = (d + nthreads - 1) / nthreads;
    const int64_t c0 = std::min(d, tid * chunk), c1 = std::min(d, c0 + chunk);
    float acc[kBlock];
    for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
      const int64_t len = std::min(kBlock, c1 - b0);
      std::fill_n(acc, len, 0.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float r = pr[i];
        const X* xi = px + i * d + b0;
        const X* dyi = dy + i * d + b0;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) acc[j] += widen(dyi[j]) * widen(xi[j]) * r;
      }
      for (int64_t j = 0; j < len; ++j) dg[b0 + j] = narrow<GW>(widen(dg[b0 + j]) + acc[j]);
    }
  }
}

void rmsnorm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, RmsnormSaved& saved,
                      const Tensor& weight, bool accumulate_grad_x) {
  check_arg(saved.x.defined() && saved.rstd.defined(), "rmsnorm backward: nothing saved (forward not run?)");
  const int64_t d = weight.size(0), n = saved.x.numel() / d;
  check_rows(grad_x, d, "grad_x");
  check_rows(grad_out, d, "grad_out");
  check_arg(grad_x.numel() == n * d && grad_out.numel() == n * d, "rmsnorm backward: grad tensors must hold {} x {}", n,
            d);
  check_arg(grad_weight.numel() == d && grad_weight.is_contiguous(), "rmsnorm backward: grad_weight '{}' must hold {}",
            grad_weight.name(), d);
  OpRecord record("rmsnorm");
  const DType xd = saved.x.dtype();
  check_arg(grad_x.dtype() == xd && grad_out.dtype() == xd,
            "rmsnorm backward: grad_x '{}' and grad_out '{}' must have x's dtype {}", grad_x.name(), grad_out.name(),
            dtype_name(xd));
  dispatch_floating(weight.dtype(), [&](auto g_tag) {
    dispatch_floating(grad_weight.dtype(), [&](auto gw_tag) {
      dispatch_floating(xd, [&](auto x_tag) {
        using G = decltype(g_tag);
        using GW = decltype(gw_tag);
        using X = decltype(x_tag);
        rmsnorm_backward_kernel(data_as<X>(grad_x), data_as<GW>(grad_weight), data_as<X>(grad_out), data_as<X>(saved.x),
                                saved.rstd.data(), data_as<G>(weight), n, d, accumulate_grad_x);
      });
    });
  });
  record.count = rmsnorm_backward_count(n, d, accumulate_grad_x, weight.dtype(), grad_weight.dtype(), xd);
  saved.x.reset();
  saved.rstd.reset();
}

}  // namespace reckon
