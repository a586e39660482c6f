#include "ops/flash_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/simd_math.h"

namespace reckon {

int64_t flash_key_blocks(int64_t t) {
  const int64_t q = t / kFlashKeyBlock, rem = t % kFlashKeyBlock;
  return kFlashKeyBlock * q * (q + 1) / 2 + rem * (q + 1);
}

OpCount flash_attention_forward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype) {
  const CheckedInt bh = CheckedInt(b) * h, dk = d / h, causal = CheckedInt(t) * (t + 1) / 2;
  const CheckedInt scaled = dk == 1 ? 0 : 1, s = dtype_bytes(dtype);
  OpCount c;
  c.matmul_flops = (bh * 4 * dk * causal).value();
  c.other_flops = (bh * (4 * causal + flash_key_blocks(t) * (dk + 4) + t * (dk + 3 + scaled * dk))).value();
  c.bytes_read = (s * 3 * b * t * d).value();
  c.bytes_written = (s * b * t * d + 4 * bh * t).value();
  return c;
}

OpCount flash_attention_backward_count(int64_t b, int64_t t, int64_t d, int64_t h, DType dtype) {
  const CheckedInt bh = CheckedInt(b) * h, dk = d / h, causal = CheckedInt(t) * (t + 1) / 2;
  const CheckedInt scaled = dk == 1 ? 0 : 1, s = dtype_bytes(dtype);
  OpCount c;
  c.matmul_flops = (bh * 10 * dk * causal).value();
  c.other_flops = (bh * (4 * causal + t * (2 * dk + scaled * 2 * dk))).value();
  c.bytes_read = (s * 5 * b * t * d + 4 * bh * t).value();
  c.bytes_written = (s * 3 * b * t * d).value();
  return c;
}

static void check_flash_qkv(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads) {
  check_arg(q.dim() == 3 && q.is_contiguous(), "flash attention: q '{}' must be a contiguous (B, T, D) tensor, got {}",
            q.name(), q.shape_str());
  check_arg(k.shape() == q.shape() && v.shape() == q.shape() && k.is_contiguous() && v.is_contiguous() &&
                k.dtype() == q.dtype() && v.dtype() == q.dtype(),
            "flash attention: q {}, k {}, v {} must be contiguous with equal shapes and dtypes", q.shape_str(),
            k.shape_str(), v.shape_str());
  const int64_t d = q.size(2);
  check_arg(num_heads >= 1 && num_heads <= d, "flash attention: num_heads is {}, allowed range is [1, {}] (d_model)",
            num_heads, d);
  check_arg(d % num_heads == 0,
            "flash attention: d_model {} is not divisible by num_heads {} (d_model % num_heads must be 0)", d,
            num_heads);
}

// One (b, h): rows i = 0..T-1 of the head's strided view (row stride D), keys 0..i in blocks.
//   out_row = Σ_j softmax_j(s_ij) v_j,  lse_i = m_i + log l_i.   acc: d_k floats, scores: kFlashKeyBlock floats.
template <typename T>
static void flash_forward_head(T* out, float* lse, const T* q, const T* k, const T* v, int64_t t, int64_t d,
                               int64_t dk, float scale, bool scaled, float* acc, float* scores, float* qs) {
  for (int64_t i = 0; i < t; ++i) {
    const T* qi = q + i * d;
    for (int64_t c = 0; c < dk; ++c) qs[c] = scaled ? widen(qi[c]) * scale : widen(qi[c]);
    std::fill_n(acc, dk, 0.0f);
    float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
    for (int64_t j0 = 0; j0 <= i; j0 += kFlashKeyBlock) {
      const int64_t n = std::min(kFlashKeyBlock, i + 1 - j0);
      float block_max = m;
      for (int64_t j = 0; j < n; ++j) {
        const T* kj = k + (j0 + j) * d;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < dk; ++c) s += qs[c] * widen(kj[c]);
        scores[j] = s;
        block_max = s > block_max ? s : block_max;
      }
      const float correction = exp_simd(m - block_max);  // 0 for the first block (m = −inf)
      float block_sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        scores[j] = exp_simd(scores[j] - block_max);
        block_sum += scores[j];
      }
      l = l * correction + block_sum;
#pragma omp simd
      for (int64_t c = 0; c < dk; ++c) acc[c] *= correction;
      for (int64_t j = 0; j < n; ++j) {
        const T* vj = v + (j0 + j) * d;
        const float p = scores[j];
#pragma omp simd
        for (int64_t c = 0; c < dk; ++c) acc[c] += p * widen(vj[c]);
      }
      m = block_max;
    }
    const float inv = 1.0f / l;
    T* oi = out + i * d;
    for (int64_t c = 0; c < dk; ++c) oi[c] = narrow<T>(acc[c] * inv);
    lse[i] = m + std::log(l);
  }
}

// One (b, h) backward, rows i outer, keys j ≤ i inner: dQ_i in a row buffer, dK and dV for the whole head in
// float32 accumulators (T × d_k each), written out at the end.
template <typename T>
static void flash_backward_head(T* dq, T* dk_out, T* dv_out, const T* q, const T* k, const T* v, const T* o,
                                const T* dout, const float* lse, int64_t t, int64_t d, int64_t dk, float scale,
                                bool scaled, float* qs, float* dq_row, float* dk_acc, float* dv_acc) {
  std::fill_n(dk_acc, t * dk, 0.0f);
  std::fill_n(dv_acc, t * dk, 0.0f);
  for (int64_t i = 0; i < t; ++i) {
    const T* qi = q + i * d;
    const T* doi = dout + i * d;
    const T* oi = o + i * d;
    float delta = 0.0f;  // D_i = dO_i · O_i
#pragma omp simd reduction(+ : delta)
    for (int64_t c = 0; c < dk; ++c) delta += widen(doi[c]) * widen(oi[c]);
    for (int64_t c = 0; c < dk; ++c) qs[c] = scaled ? widen(qi[c]) * scale : widen(qi[c]);
    std::fill_n(dq_row, dk, 0.0f);
    const float lse_i = lse[i];
    for (int64_t j = 0; j <= i; ++j) {
      const T* kj = k + j * d;
      const T* vj = v + j * d;
      float s = 0.0f, dp = 0.0f;
#pragma omp simd reduction(+ : s, dp)
      for (int64_t c = 0; c < dk; ++c) {
        s += qs[c] * widen(kj[c]);
        dp += widen(doi[c]) * widen(vj[c]);
      }
      const float p = exp_simd(s - lse_i);
      const float ds = p * (dp - delta);
      float* dvj = dv_acc + j * dk;
      float* dkj = dk_acc + j * dk;
#pragma omp simd
      for (int64_t c = 0; c < dk; ++c) {
        dvj[c] += p * widen(doi[c]);
        dkj[c] += ds * qs[c];
        dq_row[c] += ds * widen(kj[c]);
      }
    }
    T* dqi = dq + i * d;
    for (int64_t c = 0; c < dk; ++c) dqi[c] = narrow<T>(scaled ? dq_row[c] * scale : dq_row[c]);
  }
  for (int64_t j = 0; j < t; ++j)
    for (int64_t c = 0; c < dk; ++c) {
      dk_out[j * d + c] = narrow<T>(dk_acc[j * dk + c]);
      dv_out[j * d + c] = narrow<T>(dv_acc[j * dk + c]);
    }
}

Tensor flash_attention_forward(FlashAttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t num_heads, std::string_view name) {
  check_flash_qkv(q, k, v, num_heads);
  const int64_t b = q.size(0), t = q.size(1), d = q.size(2), h = num_heads, dk = d / h;
  const std::string prefix(name);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const bool scaled = dk != 1;
  Tensor lse = Tensor::empty({b, h, t}, Category::activation, prefix + ".lse");
  Tensor out = Tensor::empty({b, t, d}, Category::activation, prefix + ".ctx", q.dtype());
  const int threads = omp_get_max_threads();
  const int64_t per_thread = 2 * dk + kFlashKeyBlock;  // acc, the scaled query row, a block of scores
  Tensor workspace = Tensor::empty({threads, per_thread}, Category::temporary, prefix + ".workspace");
  OpRecord record("attention");
  dispatch_floating(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = data_as<T>(q), *pk = data_as<T>(k), *pv = data_as<T>(v);
    T* po = data_as<T>(out);
    float* pl = lse.data();
    float* ws = workspace.data();
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi) {
        float* w = ws + omp_get_thread_num() * per_thread;
        const int64_t base = bi * t * d + hi * dk;
        flash_forward_head(po + base, pl + (bi * h + hi) * t, pq + base, pk + base, pv + base, t, d, dk, scale, scaled,
                           w, w + 2 * dk, w + dk);
      }
  });
  record.count = flash_attention_forward_count(b, t, d, h, q.dtype());
  workspace.reset();
  saved.q = q;
  saved.k = k;
  saved.v = v;
  saved.out = out;
  saved.lse = lse;
  saved.num_heads = h;
  saved.name = prefix;
  return out;
}

void flash_attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v,
                              const Tensor& grad_ctx, FlashAttentionSaved& saved) {
  check_arg(saved.lse.defined(), "flash attention backward: nothing saved (forward not run, or backward run twice)");
  const int64_t h = saved.num_heads;
  check_flash_qkv(grad_q, grad_k, grad_v, h);
  check_arg(grad_q.shape() == saved.q.shape() && grad_ctx.shape() == saved.q.shape() && grad_ctx.is_contiguous() &&
                grad_q.dtype() == saved.q.dtype() && grad_ctx.dtype() == saved.q.dtype(),
            "flash attention backward: gradients must have q's shape {} and dtype {}", saved.q.shape_str(),
            dtype_name(saved.q.dtype()));
  const int64_t b = grad_q.size(0), t = grad_q.size(1), d = grad_q.size(2), dk = d / h;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const bool scaled = dk != 1;
  const int threads = omp_get_max_threads();
  const int64_t per_thread = 2 * dk + 2 * t * dk;
  Tensor workspace = Tensor::empty({threads, per_thread}, Category::temporary, saved.name + ".grad_workspace");
  OpRecord record("attention");
  dispatch_floating(grad_q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = data_as<T>(saved.q), *pk = data_as<T>(saved.k), *pv = data_as<T>(saved.v);
    const T *po = data_as<T>(saved.out), *pdo = data_as<T>(grad_ctx);
    T *pdq = data_as<T>(grad_q), *pdk = data_as<T>(grad_k), *pdv = data_as<T>(grad_v);
    const float* pl = saved.lse.data();
    float* ws = workspace.data();
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t hi = 0; hi < h; ++hi) {
        float* w = ws + omp_get_thread_num() * per_thread;
        const int64_t base = bi * t * d + hi * dk;
        flash_backward_head(pdq + base, pdk + base, pdv + base, pq + base, pk + base, pv + base, po + base, pdo + base,
                            pl + (bi * h + hi) * t, t, d, dk, scale, scaled, w, w + dk, w + 2 * dk, w + 2 * dk + t * dk);
      }
  });
  record.count = flash_attention_backward_count(b, t, d, h, grad_q.dtype());
  workspace.reset();
  saved.q.reset();
  saved.k.reset();
  saved.v.reset();
  saved.out.reset();
  saved.lse.reset();
}

}  // namespace reckon
