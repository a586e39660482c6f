#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "runtime/check.h"
#include "runtime/matmul.h"
#include "runtime/simd_math.h"
#include "runtime/checked.h"

namespace reckon {

OpCount causal_softmax_forward_count(int64_t bh, int64_t t, DType dtype) {
  const CheckedInt BH = bh, T = t, causal = T * (T + 1) / 2, s = dtype_bytes(dtype);
  OpCount c;
  c.other_flops = (BH * 5 * causal).value();
  c.bytes_read = (s * BH * causal).value();
  c.bytes_written = (s * BH * T * T).value();
  return c;
}

OpCount causal_softmax_backward_count(int64_t bh, int64_t t, DType dtype) {
  const CheckedInt BH = bh, T = t, causal = T * (T + 1) / 2, s = dtype_bytes(dtype);
  OpCount c;
  c.other_flops = (BH * 4 * causal).value();
  c.bytes_read = (s * BH * 2 * causal).value();
  c.bytes_written = (s * BH * T * T).value();
  return c;
}

OpCount attention_forward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype) {
  const int64_t s = dtype_bytes(dtype);
  const int64_t dk = d / h, bh = b * h, causal = t * (t + 1) / 2;
  const int64_t scaled = dk == 1 ? 0 : 1;  // 1/√d_k = 1 is no output scale: nothing runs, nothing counts
  OpCount c;
  c.matmul_flops = bh * 4 * t * t * dk;
  c.other_flops = bh * (scaled * t * t + 5 * causal);
  // QKᵀ reads Q, K, writes scores; softmax reads the causal part, writes every entry; PV reads P, V, writes ctx.
  c.bytes_read = s * bh * (2 * t * dk + causal + t * t + t * dk);
  c.bytes_written = s * bh * (2 * t * t + t * dk);
  return c;
}

OpCount attention_backward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype) {
  const int64_t s = dtype_bytes(dtype);
  const int64_t dk = d / h, bh = b * h, causal = t * (t + 1) / 2;
  const int64_t scaled = dk == 1 ? 0 : 1;
  OpCount c;
  c.matmul_flops = bh * 8 * t * t * dk;
  c.other_flops = bh * (scaled * 2 * t * dk + 4 * causal);
  // dP = dC Vᵀ; dV = Pᵀ dC; softmax backward (reads P and dP over the causal part, writes every dS);
  // dQ = dS K; dK = dSᵀ Q.
  c.bytes_read = s * bh * (2 * t * dk + (t * t + t * dk) + 2 * causal + 2 * (t * t + t * dk));
  c.bytes_written = s * bh * (t * t + t * dk + t * t + 2 * t * dk);
  return c;
}

AttentionTensors attention_forward_tensors(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype) {
  return {{".probs", Category::activation, dtype, {b, h, t, t}, Lifetime::saved},
          {".ctx", Category::activation, dtype, {b, t, d}, Lifetime::output}};
}

TensorDecl attention_backward_tensor(int64_t b, int64_t t, int64_t h, DType dtype) {
  return {".grad_probs", Category::temporary, dtype, {b, h, t, t}, Lifetime::temporary};
}

Tensor head_view(const Tensor& x, int64_t num_heads) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2), dk = d / num_heads;
  return x.as_strided({b, num_heads, t, dk}, {t * d, dk, d, 1}, 0);
}

void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads, std::string_view op) {
  check_arg(q.dim() == 3 && q.is_contiguous(), "{}: q '{}' must be a contiguous (B, T, D) tensor, got {}", op, q.name(),
            q.shape_str());
  check_arg(k.shape() == q.shape() && v.shape() == q.shape() && k.is_contiguous() && v.is_contiguous() &&
                k.dtype() == q.dtype() && v.dtype() == q.dtype(),
            "{}: q {}, k {}, v {} must be contiguous with equal shapes and dtypes", op, q.shape_str(), k.shape_str(),
            v.shape_str());
  const int64_t d = q.size(2);
  check_arg(num_heads >= 1 && num_heads <= d, "{}: num_heads is {}, allowed range is [1, {}] (d_model)", op, num_heads,
            d);
  check_arg(d % num_heads == 0, "{}: d_model {} is not divisible by num_heads {} (d_model % num_heads must be 0)", op,
            d, num_heads);
}

// In place over each (b, h) T×T block: row i becomes softmax(row[0..i]) followed by zeros. T = float or bf16:
// arithmetic in float32; a bf16 row holds exp(x − max) rounded, then the normalised value rounded again.
template <typename T>
static void causal_softmax_forward(T* p, int64_t bh, int64_t t) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t blk = 0; blk < bh; ++blk) {
    for (int64_t i = 0; i < t; ++i) {
      T* row = p + (blk * t + i) * t;
      const float m = max_of(row, i + 1);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j <= i; ++j) {
        const float e = exp_simd(widen(row[j]) - m);
        row[j] = narrow<T>(e);
        sum += e;
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) row[j] = narrow<T>(widen(row[j]) * inv);
      for (int64_t j = i + 1; j < t; ++j) row[j] = narrow<T>(0.0f);
    }
  }
}

// In place: dp becomes dS = P ⊙ (dP − Σ_j P_j dP_j) on the causal part, zeros above it.
template <typename T>
static void causal_softmax_backward(T* dp, const T* p, int64_t bh, int64_t t) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t blk = 0; blk < bh; ++blk) {
    for (int64_t i = 0; i < t; ++i) {
      T* drow = dp + (blk * t + i) * t;
      const T* prow = p + (blk * t + i) * t;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j <= i; ++j) dot += widen(prow[j]) * widen(drow[j]);
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) drow[j] = narrow<T>(widen(prow[j]) * (widen(drow[j]) - dot));
      for (int64_t j = i + 1; j < t; ++j) drow[j] = narrow<T>(0.0f);
    }
  }
}

Tensor attention_forward(AttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                         std::string_view name) {
  check_attention_inputs(q, k, v, num_heads, "attention");
  const DType dtype = q.dtype();
  const int64_t b = q.size(0), t = q.size(1), d = q.size(2), dk = d / num_heads;
  const std::string prefix(name);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const AttentionTensors decl = attention_forward_tensors(b, t, d, num_heads, dtype);
  Tensor probs = decl.probs.allocate(prefix);
  Tensor ctx = decl.ctx.allocate(prefix);
  const Tensor k_t = head_view(k, num_heads).transpose(-2, -1);
  matmul(probs, head_view(q, num_heads), k_t, "attention", scale);  // scores = Q Kᵀ / sqrt(d_k)
  {
    OpRecord record("attention");
    dispatch_floating(dtype,
                      [&](auto tag) { causal_softmax_forward(data_as<decltype(tag)>(probs), b * num_heads, t); });
    record.count = causal_softmax_forward_count(b * num_heads, t, dtype);
  }
  matmul(head_view(ctx, num_heads), probs, head_view(v, num_heads), "attention");  // ctx = P V
  saved.q = q;
  saved.k = k;
  saved.v = v;
  saved.probs = probs;
  saved.num_heads = num_heads;
  saved.name = prefix;
  return ctx;
}

void attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                        AttentionSaved& saved) {
  check_arg(saved.probs.defined(), "attention backward: nothing saved (forward not run, or backward run twice)");
  const int64_t h = saved.num_heads;
  check_attention_inputs(grad_q, grad_k, grad_v, h, "attention backward");
  check_arg(grad_q.shape() == saved.q.shape() && grad_ctx.shape() == saved.q.shape() && grad_ctx.is_contiguous(),
            "attention backward: gradients must have q's shape {}", saved.q.shape_str());
  const int64_t b = grad_q.size(0), t = grad_q.size(1), d = grad_q.size(2), dk = d / h;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const Tensor grad_ctx_heads = head_view(grad_ctx, h);

  const DType dtype = saved.probs.dtype();
  Tensor grad_probs = attention_backward_tensor(b, t, h, dtype).allocate(saved.name);
  matmul(grad_probs, grad_ctx_heads, head_view(saved.v, h).transpose(-2, -1), "attention");  // dP = dC Vᵀ
  matmul(head_view(grad_v, h), saved.probs.transpose(-2, -1), grad_ctx_heads, "attention");  // dV = Pᵀ dC
  {
    OpRecord record("attention");
    dispatch_floating(dtype, [&](auto tag) {
      using T = decltype(tag);
      causal_softmax_backward(data_as<T>(grad_probs), data_as<T>(saved.probs), b * h, t);
    });
    record.count = causal_softmax_backward_count(b * h, t, dtype);
  }
  saved.probs.reset();
  saved.v.reset();
  matmul(head_view(grad_q, h), grad_probs, head_view(saved.k, h), "attention", scale);  // dQ = dS K / sqrt(d_k)
  saved.k.reset();
  matmul(head_view(grad_k, h), grad_probs.transpose(-2, -1), head_view(saved.q, h), "attention",
         scale);  // dK = dSᵀ Q / sqrt(d_k)
  saved.q.reset();
}

}  // namespace reckon
