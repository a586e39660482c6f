#include "ops/cross_entropy.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/simd_math.h"
#include "runtime/checked.h"

namespace reckon {

OpCount cross_entropy_forward_count(int64_t n, int64_t v, DType logits, bool capped) {
  const CheckedInt s = dtype_bytes(logits), N = n, V = v, lse = capped ? 1 : 0;
  OpCount c;
  c.other_flops = (capped ? N * (7 * V + 6) + 1 : N * (5 * V + 4) + 1).value();
  c.bytes_read = (s * N * V + 4 * (N + N)).value();           // logits, targets, row losses
  c.bytes_written = (s * N * V + 4 * (1 + lse) * N).value();  // probs (capped: tanh), row losses (, lse)
  return c;
}

OpCount cross_entropy_backward_count(int64_t n, int64_t v, DType logits, bool capped) {
  const CheckedInt s = dtype_bytes(logits), N = n, V = v, lse = capped ? 1 : 0;
  OpCount c;
  c.other_flops = (capped ? N * (7 * V + 8) + 1 : N * (V + 1) + 1).value();
  c.bytes_read = (s * N * V + 4 * (1 + lse) * N).value();  // probs (capped: tanh), targets (, lse)
  c.bytes_written = (s * N * V).value();
  return c;
}

TensorDecl cross_entropy_forward_tensor(int64_t n) {
  return {".row_loss", Category::temporary, DType::f32, {n}, Lifetime::temporary};
}

TensorDecl cross_entropy_lse_tensor(int64_t n) {
  return {".lse", Category::activation, DType::f32, {n}, Lifetime::saved};
}

// Row i of capped logits: overwritten with u = tanh(z / c); returns the row loss, writes the row's lse.
template <typename T>
static float capped_row_forward(T* row, int64_t v, int32_t target, float cap, float* lse) {
  const float inv_cap = 1.0f / cap;
#pragma omp simd
  for (int64_t j = 0; j < v; ++j) row[j] = narrow<T>(tanh_simd(widen(row[j]) * inv_cap));
  const float m = cap * max_of(row, v);  // c > 0: the largest c·u is c·(largest u)
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < v; ++j) sum += exp_simd(cap * widen(row[j]) - m);
  const float target_logit = cap * widen(row[target]), log_sum = std::log(sum);
  *lse = m + log_sum;
  return log_sum - (target_logit - m);
}

double cross_entropy_forward(CrossEntropySaved& saved, const Tensor& logits, const Tensor& targets,
                             std::string_view name, float softcap) {
  check_arg(logits.is_contiguous() && logits.dim() >= 2, "cross_entropy: logits '{}' {} must be contiguous (…, V)",
            logits.name(), logits.shape_str());
  const int64_t v = logits.size(-1), n = logits.numel() / v;
  check_arg(targets.dtype() == DType::i32 && targets.is_contiguous() && targets.numel() == n,
            "cross_entropy: targets '{}' must be int32 with {} elements (one per logits row), got {}", targets.name(),
            n, targets.shape_str());
  const int32_t* tgt = targets.data_i32();
  for (int64_t i = 0; i < n; ++i) {
    check_arg(tgt[i] >= 0 && tgt[i] < v, "cross_entropy: target at row {} is {}, allowed range is [0, {}]", i, tgt[i],
              v - 1);
  }
  check_arg(std::isfinite(softcap) && softcap >= 0.0f,
            "cross_entropy: soft-capping is {}, allowed: 0 (none) or a finite value > 0", softcap);
  const bool capped = softcap > 0.0f;
  Tensor lse = capped ? cross_entropy_lse_tensor(n).allocate(name) : Tensor();
  Tensor row_loss = cross_entropy_forward_tensor(n).allocate(name);
  OpRecord record("cross_entropy");
  float* rl = row_loss.data();
  dispatch_floating(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* z = data_as<T>(logits);
    if (capped) {
      float* pl = lse.data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) rl[i] = capped_row_forward(z + i * v, v, tgt[i], softcap, pl + i);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T* row = z + i * v;
      const float target_logit = widen(row[tgt[i]]);
      const float m = max_of(row, v);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < v; ++j) {
        const float e = exp_simd(widen(row[j]) - m);
        row[j] = narrow<T>(e);
        sum += e;
      }
      // log(sum) − (z_t − m), not (m + log(sum)) − z_t: the difference of two large logits is exact, the sum
      // of a large logit and a small log is not (≈ 3e-5 off at logits near 1000).
      rl[i] = std::log(sum) - (target_logit - m);
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) row[j] = narrow<T>(widen(row[j]) * inv);
    }
  });
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += rl[i];
  record.count = cross_entropy_forward_count(n, v, logits.dtype(), capped);
  saved.probs = logits;
  saved.targets = targets;
  saved.lse = lse;
  saved.softcap = softcap;
  return total / static_cast<double>(n);
}

Tensor cross_entropy_backward(CrossEntropySaved& saved, float grad_loss, int64_t mean_rows) {
  check_arg(saved.probs.defined(), "cross_entropy backward: nothing saved (forward not run, or backward run twice)");
  const int64_t v = saved.probs.size(-1), n = saved.probs.numel() / v;
  check_arg(mean_rows == 0 || mean_rows >= n, "cross_entropy backward: mean over {} rows, fewer than this call's {}",
            mean_rows, n);
  OpRecord record("cross_entropy");
  const float scale = grad_loss / static_cast<float>(mean_rows > 0 ? mean_rows : n);
  const int32_t* tgt = saved.targets.data_i32();
  const bool capped = saved.lse.defined();
  const float cap = saved.softcap;
  dispatch_floating(saved.probs.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = data_as<T>(saved.probs);
    if (capped) {  // the buffer holds u = tanh(z / c): p = exp(c·u − lse), dz = (p − onehot)·scale·(1 − u²)
      const float* pl = saved.lse.data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        T* row = p + i * v;
        const float lse = pl[i], ut = widen(row[tgt[i]]);
#pragma omp simd
        for (int64_t j = 0; j < v; ++j) {
          const float u = widen(row[j]);
          row[j] = narrow<T>(exp_simd(cap * u - lse) * scale * (1.0f - u * u));
        }
        row[tgt[i]] = narrow<T>((exp_simd(cap * ut - lse) - 1.0f) * scale * (1.0f - ut * ut));
      }
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      T* row = p + i * v;
      row[tgt[i]] = narrow<T>(widen(row[tgt[i]]) - 1.0f);
#pragma omp simd
      for (int64_t j = 0; j < v; ++j) row[j] = narrow<T>(widen(row[j]) * scale);
    }
  });
  record.count = cross_entropy_backward_count(n, v, saved.probs.dtype(), capped);
  Tensor grad_logits = saved.probs;
  saved.probs.reset();
  saved.targets.reset();
  saved.lse.reset();
  return grad_logits;
}

}  // namespace reckon
