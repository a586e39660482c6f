#include "ops/rmsnorm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "runtime/check.h"

namespace reckon {

OpCount rmsnorm_forward_count(int64_t n, int64_t d) {
  OpCount c;
  c.other_flops = n * (4 * d + 4);
  c.bytes_read = 4 * (n * d + d);
  c.bytes_written = 4 * (n * d + n);
  return c;
}

OpCount rmsnorm_backward_count(int64_t n, int64_t d, bool accumulate_grad_x) {
  OpCount c;
  c.other_flops = n * (10 * d + 4) + (accumulate_grad_x ? n * d : 0);
  // reads dy, x, g, rstd, grad_weight (and grad_x when accumulating); writes grad_x, grad_weight.
  c.bytes_read = 4 * (2 * n * d + d + n + d + (accumulate_grad_x ? n * d : 0));
  c.bytes_written = 4 * (n * d + d);
  return c;
}

static void check_rows(const Tensor& t, int64_t d, const char* what) {
  check_arg(t.is_contiguous() && t.size(-1) == d, "rmsnorm: {} '{}' {} must be contiguous with last dim {}", what,
            t.name(), t.shape_str(), d);
}

Tensor rmsnorm_forward(RmsnormSaved& saved, const Tensor& x, const Tensor& weight, float eps, std::string_view name) {
  check_arg(weight.dim() == 1, "rmsnorm: weight '{}' must be (D,), got {}", weight.name(), weight.shape_str());
  const int64_t d = weight.size(0), n = x.numel() / d;
  check_rows(x, d, "x");
  check_arg(eps > 0.0f && std::isfinite(eps), "rmsnorm: eps is {}, allowed range is (0, inf)", eps);
  const std::string prefix(name);
  Tensor out = Tensor::empty(x.shape(), Category::activation, prefix + ".out");
  Tensor rstd = Tensor::empty({n}, Category::activation, prefix + ".rstd");
  OpRecord record("rmsnorm");
  const float* px = x.data();
  const float* g = weight.data();
  float* po = out.data();
  float* pr = rstd.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = px + i * d;
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t j = 0; j < d; ++j) sum_sq += xi[j] * xi[j];
    const float r = 1.0f / std::sqrt(sum_sq / static_cast<float>(d) + eps);
    pr[i] = r;
    float* oi = po + i * d;
    for (int64_t j = 0; j < d; ++j) oi[j] = xi[j] * r * g[j];
  }
  record.count = rmsnorm_forward_count(n, d);
  saved.x = x;
  saved.rstd = rstd;
  return out;
}

void rmsnorm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_out, RmsnormSaved& saved,
                      const Tensor& weight, bool accumulate_grad_x) {
  check_arg(saved.x.defined() && saved.rstd.defined(), "rmsnorm backward: nothing saved (forward not run?)");
  const int64_t d = weight.size(0), n = saved.x.numel() / d;
  check_rows(grad_x, d, "grad_x");
  check_rows(grad_out, d, "grad_out");
  check_arg(grad_x.numel() == n * d && grad_out.numel() == n * d, "rmsnorm backward: grad tensors must hold {} x {}",
            n, d);
  OpRecord record("rmsnorm");
  const float* px = saved.x.data();
  const float* pr = saved.rstd.data();
  const float* g = weight.data();
  const float* dy = grad_out.data();
  float* dx = grad_x.data();
  float* dg = grad_weight.data();
  const float inv_d = 1.0f / static_cast<float>(d);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = px + i * d;
    const float* dyi = dy + i * d;
    float* dxi = dx + i * d;
    const float r = pr[i];
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += dyi[j] * g[j] * xi[j];
    const float c = r * r * r * dot * inv_d;
    if (accumulate_grad_x) {
      for (int64_t j = 0; j < d; ++j) dxi[j] += (g[j] * dyi[j]) * r - xi[j] * c;
    } else {
      for (int64_t j = 0; j < d; ++j) dxi[j] = (g[j] * dyi[j]) * r - xi[j] * c;
    }
  }
  // grad_weight: threads own column ranges and sum rows in order, so the result does not depend on the
  // thread count and no two threads write the same element.
#pragma omp parallel
  {
    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t chunk = (d + nthreads - 1) / nthreads;
    const int64_t c0 = std::min(d, tid * chunk), c1 = std::min(d, c0 + chunk);
    for (int64_t i = 0; i < n; ++i) {
      const float r = pr[i];
      const float* xi = px + i * d;
      const float* dyi = dy + i * d;
      for (int64_t j = c0; j < c1; ++j) dg[j] += dyi[j] * xi[j] * r;
    }
  }
  record.count = rmsnorm_backward_count(n, d, accumulate_grad_x);
  saved.x.reset();
  saved.rstd.reset();
}

}  // namespace reckon
