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

int64_t flash_forward_workspace_floats(int64_t dk) {
  return 2 * kFlashQueryBlock * dk + 2 * kFlashQueryBlock + dk * kFlashKeyBlock + kFlashKeyBlock;
}
int64_t flash_backward_workspace_floats(int64_t t, int64_t dk) {
  return 2 * t * dk + t + 4 * dk * kFlashKeyBlock + 3 * kFlashKeyBlock;
}

// Kᵀ of one key block (n ≤ kFlashKeyBlock keys of a head, row stride D) into kt (d_k × kFlashKeyBlock), widened:
// scores for a query row then vectorise over the keys (s[j] += q[c] · kt[c][j]).
template <typename T>
static void transpose_block(float* kt, const T* k, int64_t n, int64_t d, int64_t dk) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < dk; ++c) kt[c * kFlashKeyBlock + j] = widen(k[j * d + c]);
}

// s[0..n) = qs · kt[:, 0..n)
static inline void row_scores(float* s, const float* qs, const float* kt, int64_t n, int64_t dk) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) s[j] = 0.0f;
  for (int64_t c = 0; c < dk; ++c) {
    const float qc = qs[c];
    const float* ktc = kt + c * kFlashKeyBlock;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s[j] += qc * ktc[j];
  }
}

// One (b, h): query blocks of kFlashQueryBlock rows against the key blocks at or below the diagonal; row i of a
// diagonal block stops at key i. Per row: running max m, sum l and the output accumulator, rescaled per block.
template <typename T>
static void flash_forward_head(T* out, float* lse, const T* q, const T* k, const T* v, int64_t t, int64_t d,
                               int64_t dk, float scale, bool scaled, float* ws) {
  float* acc = ws;                                   // kFlashQueryBlock × d_k
  float* m = acc + kFlashQueryBlock * dk;            // kFlashQueryBlock
  float* l = m + kFlashQueryBlock;                   // kFlashQueryBlock
  float* kt = l + kFlashQueryBlock;                  // d_k × kFlashKeyBlock
  float* scores = kt + dk * kFlashKeyBlock;          // kFlashKeyBlock
  float* q_block = scores + kFlashKeyBlock;          // kFlashQueryBlock × d_k: the block's rows, scaled once
  for (int64_t i0 = 0; i0 < t; i0 += kFlashQueryBlock) {
    const int64_t rows = std::min(kFlashQueryBlock, t - i0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < dk; ++c) {
        const float x = widen(q[(i0 + r) * d + c]);
        q_block[r * dk + c] = scaled ? x * scale : x;
      }
    std::fill_n(acc, rows * dk, 0.0f);
    std::fill_n(m, rows, -std::numeric_limits<float>::infinity());
    std::fill_n(l, rows, 0.0f);
    for (int64_t j0 = 0; j0 < i0 + rows; j0 += kFlashKeyBlock) {
      const int64_t block = std::min(kFlashKeyBlock, i0 + rows - j0);
      transpose_block(kt, k + j0 * d, block, d, dk);
      for (int64_t r = std::max<int64_t>(0, j0 - i0); r < rows; ++r) {
        const int64_t i = i0 + r, n = std::min(block, i + 1 - j0);  // keys j0 .. min(i, j0 + block − 1)
        row_scores(scores, q_block + r * dk, kt, n, dk);
        float block_max = m[r];
        for (int64_t j = 0; j < n; ++j) block_max = scores[j] > block_max ? scores[j] : block_max;
        const float correction = exp_simd(m[r] - block_max);  // ≈ 0 for the row's first block (m = −inf)
        float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = exp_simd(scores[j] - block_max);
          block_sum += scores[j];
        }
        l[r] = l[r] * correction + block_sum;
        m[r] = block_max;
        float* acc_r = acc + r * dk;
#pragma omp simd
        for (int64_t c = 0; c < dk; ++c) acc_r[c] *= correction;
        for (int64_t j = 0; j < n; ++j) {
          const T* vj = v + (j0 + j) * d;
          const float p = scores[j];
#pragma omp simd
          for (int64_t c = 0; c < dk; ++c) acc_r[c] += p * widen(vj[c]);
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float inv = 1.0f / l[r];
      T* oi = out + (i0 + r) * d;
      const float* acc_r = acc + r * dk;
      for (int64_t c = 0; c < dk; ++c) oi[c] = narrow<T>(acc_r[c] * inv);
      lse[i0 + r] = m[r] + std::log(l[r]);
    }
  }
}

// One (b, h) backward: key blocks outer (their dK, dV accumulate in the block's own buffers), query rows i ≥ j0
// inner; dQ accumulates across key blocks in a float32 T × d_k buffer, scaled and written at the end.
template <typename T>
static void flash_backward_head(T* dq, T* dk_out, T* dv_out, const T* q, const T* k, const T* v, const T* o,
                                const T* dout, const float* lse, int64_t t, int64_t d, int64_t dk, float scale,
                                bool scaled, float* ws) {
  float* dq_acc = ws;                               // T × d_k
  float* delta = dq_acc + t * dk;                   // T: D_i = dO_i · O_i
  float* kt = delta + t;                            // d_k × kFlashKeyBlock
  float* vt = kt + dk * kFlashKeyBlock;             // d_k × kFlashKeyBlock
  float* dk_blk = vt + dk * kFlashKeyBlock;         // kFlashKeyBlock × d_k
  float* dv_blk = dk_blk + dk * kFlashKeyBlock;     // kFlashKeyBlock × d_k
  float* p = dv_blk + dk * kFlashKeyBlock;          // kFlashKeyBlock
  float* dp = p + kFlashKeyBlock;                   // kFlashKeyBlock
  float* ds = dp + kFlashKeyBlock;                  // kFlashKeyBlock
  float* q_scaled = ds + kFlashKeyBlock;            // T × d_k: the head's query rows, scaled once
  std::fill_n(dq_acc, t * dk, 0.0f);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t c = 0; c < dk; ++c) {
      const float x = widen(q[i * d + c]);
      q_scaled[i * dk + c] = scaled ? x * scale : x;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < dk; ++c) sum += widen(dout[i * d + c]) * widen(o[i * d + c]);
    delta[i] = sum;
  }
  for (int64_t j0 = 0; j0 < t; j0 += kFlashKeyBlock) {
    const int64_t block = std::min(kFlashKeyBlock, t - j0);
    transpose_block(kt, k + j0 * d, block, d, dk);
    transpose_block(vt, v + j0 * d, block, d, dk);
    std::fill_n(dk_blk, block * dk, 0.0f);
    std::fill_n(dv_blk, block * dk, 0.0f);
    for (int64_t i = j0; i < t; ++i) {
      const int64_t n = std::min(block, i + 1 - j0);
      const T* doi = dout + i * d;
      const float* qs = q_scaled + i * dk;
      row_scores(p, qs, kt, n, dk);  // s
      // dP = dO_i · V_j, through Vᵀ like the scores.
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dp[j] = 0.0f;
      for (int64_t c = 0; c < dk; ++c) {
        const float g = widen(doi[c]);
        const float* vtc = vt + c * kFlashKeyBlock;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dp[j] += g * vtc[j];
      }
      const float lse_i = lse[i], delta_i = delta[i];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        p[j] = exp_simd(p[j] - lse_i);
        ds[j] = p[j] * (dp[j] - delta_i);
      }
      float* dq_i = dq_acc + i * dk;
      for (int64_t j = 0; j < n; ++j) {
        const float pj = p[j], dsj = ds[j];
        float* dvj = dv_blk + j * dk;
        float* dkj = dk_blk + j * dk;
        const T* kj = k + (j0 + j) * d;
#pragma omp simd
        for (int64_t c = 0; c < dk; ++c) {
          dvj[c] += pj * widen(doi[c]);
          dkj[c] += dsj * qs[c];
          dq_i[c] += dsj * widen(kj[c]);
        }
      }
    }
    for (int64_t j = 0; j < block; ++j)
      for (int64_t c = 0; c < dk; ++c) {
        dk_out[(j0 + j) * d + c] = narrow<T>(dk_blk[j * dk + c]);
        dv_out[(j0 + j) * d + c] = narrow<T>(dv_blk[j * dk + c]);
      }
  }
  for (int64_t i = 0; i < t; ++i)
    for (int64_t c = 0; c < dk; ++c) dq[i * d + c] = narrow<T>(scaled ? dq_acc[i * dk + c] * scale : dq_acc[i * dk + c]);
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
  const int64_t per_thread = flash_forward_workspace_floats(dk);
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
                           w);
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
  const int64_t per_thread = flash_backward_workspace_floats(t, dk);
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
                            pl + (bi * h + hi) * t, t, d, dk, scale, scaled, w);
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
