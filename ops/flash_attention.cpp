#include "ops/flash_attention.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>

#include "ops/attention.h"
#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/simd_math.h"

namespace reckon {

// F(n) = Σ_{u < n} floor(u / kFlashKeyBlock).
static int64_t block_index_sum(int64_t n) {
  const int64_t q = n / kFlashKeyBlock, rem = n % kFlashKeyBlock;
  return kFlashKeyBlock * q * (q - 1) / 2 + rem * q;
}

int64_t flash_key_blocks(int64_t t, int64_t window) {
  // Row i visits blocks floor(first_key(i) / 64) … floor(i / 64); first_key(i) = i − W + 1 from row W − 1 on.
  const int64_t w = window > 0 && window < t ? window : t;
  return t + block_index_sum(t) - block_index_sum(t - w + 1);
}

float flash_query_scale(const AttentionShape& s) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  return s.capped() ? scale / s.softcap : scale;
}

OpCount flash_attention_forward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt b = sh.batch, t = sh.seq, dk = sh.head_dim, bh = b * sh.heads, visible = sh.visible();
  const CheckedInt scaled = flash_query_scale(sh) == 1.0f ? 0 : 1, capped = sh.capped() ? 1 : 0;
  const CheckedInt alibi = sh.alibi() ? 1 : 0;
  const CheckedInt s = dtype_bytes(dtype), blocks = flash_key_blocks(sh.seq, sh.window);
  OpCount c;
  c.matmul_flops = (bh * 4 * dk * visible).value();
  c.other_flops =
      (bh * ((4 + 2 * capped + 2 * alibi) * visible + blocks * (dk + 4) + t * (dk + 3 + scaled * dk))).value();
  c.bytes_read = (s * b * t * (sh.q_width() + 2 * CheckedInt(sh.kv_width()))).value();
  c.bytes_written = (s * b * t * sh.q_width() + 4 * bh * t).value();
  return c;
}

OpCount flash_attention_backward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt b = sh.batch, t = sh.seq, dk = sh.head_dim, bh = b * sh.heads, visible = sh.visible();
  const CheckedInt scaled = flash_query_scale(sh) == 1.0f ? 0 : 1, capped = sh.capped() ? 1 : 0;
  const CheckedInt alibi = sh.alibi() ? 1 : 0;
  const CheckedInt s = dtype_bytes(dtype);
  const CheckedInt shared = bh - b * sh.kv_heads;  // query heads adding into their group's dK and dV sums
  OpCount c;
  c.matmul_flops = (bh * 10 * dk * visible).value();
  c.other_flops =
      (bh * ((4 + 5 * capped + 2 * alibi) * visible + t * (2 * dk + scaled * 2 * dk)) + shared * t * 2 * dk).value();
  c.bytes_read = (s * b * t * (3 * CheckedInt(sh.q_width()) + 2 * sh.kv_width()) + 4 * bh * t).value();
  c.bytes_written = (s * b * t * (sh.q_width() + 2 * CheckedInt(sh.kv_width()))).value();
  return c;
}

FlashAttentionTensors flash_attention_forward_tensors(const AttentionShape& s, DType dtype, int64_t threads) {
  return {{".lse", Category::activation, DType::f32, {s.batch, s.heads, s.seq}, Lifetime::saved},
          {".ctx", Category::activation, dtype, {s.batch, s.seq, s.q_width()}, Lifetime::output},
          {".workspace",
           Category::temporary,
           DType::f32,
           {threads, flash_forward_workspace_floats(s.head_dim)},
           Lifetime::temporary}};
}

int64_t flash_backward_parts(const AttentionShape& s, int64_t threads) {
  if (s.group() == 1) return 1;
  const int64_t units = s.batch * s.kv_heads;
  return std::min(s.group(), (threads + units - 1) / units);
}

FlashAttentionBackwardTensors flash_attention_backward_tensors(const AttentionShape& s, int64_t threads) {
  FlashAttentionBackwardTensors out{{".grad_workspace",
                                     Category::temporary,
                                     DType::f32,
                                     {threads, flash_backward_workspace_floats(s.seq, s.head_dim)},
                                     Lifetime::temporary},
                                    std::nullopt};
  if (s.group() > 1) {
    out.partials = TensorDecl{".grad_kv_partials",
                              Category::temporary,
                              DType::f32,
                              {s.batch * s.kv_heads * flash_backward_parts(s, threads), 2, s.seq, s.head_dim},
                              Lifetime::temporary};
  }
  return out;
}

int64_t flash_forward_workspace_floats(int64_t dk) {
  return 2 * kFlashQueryBlock * dk + 2 * kFlashQueryBlock + 2 * dk * kFlashKeyBlock + kFlashKeyBlock;
}
int64_t flash_backward_workspace_floats(int64_t t, int64_t dk) {
  // dQ, scaled Q (T × d_k each), D (T); Kᵀ, Vᵀ, dKᵀ, dVᵀ, K rows (d_k × 64 each); p, dP, dS (4 × 64 each);
  // 4 dO rows (4 × d_k).
  return 2 * t * dk + t + 5 * dk * kFlashKeyBlock + 12 * kFlashKeyBlock + 4 * dk;
}

// Kᵀ of one key block (n ≤ kFlashKeyBlock keys of a head, row stride d) into kt (d_k × kFlashKeyBlock), widened:
// scores for a query row then vectorise over the keys (s[j] += q[c] · kt[c][j]).
template <typename T>
static void transpose_block(float* kt, const T* k, int64_t n, int64_t d, int64_t dk) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < dk; ++c) kt[c * kFlashKeyBlock + j] = widen(k[j * d + c]);
}

// 16 float lanes (one AVX-512 register; GCC lowers it to two 256-bit halves elsewhere).
using Lanes = float __attribute__((vector_size(64)));
static_assert(kFlashKeyBlock == 64, "the full-block kernels hold 64 scores in 4 registers");

inline Lanes load_lanes(const float* p) {
  Lanes x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
inline void store_lanes(float* p, Lanes x) { std::memcpy(p, &x, sizeof x); }

// s[0..n) = qs · kt[:, 0..n). A full block (n = 64) keeps the 64 sums in four registers across the d_k loop:
// four loads and four FMAs per query element, no stores until the end.
static inline void row_scores(float* s, const float* qs, const float* kt, int64_t n, int64_t dk) {
  if (n == kFlashKeyBlock) {
    Lanes s0{}, s1{}, s2{}, s3{};
    for (int64_t c = 0; c < dk; ++c) {
      const float* ktc = kt + c * kFlashKeyBlock;
      const Lanes qc = Lanes{} + qs[c];
      s0 += qc * load_lanes(ktc);
      s1 += qc * load_lanes(ktc + 16);
      s2 += qc * load_lanes(ktc + 32);
      s3 += qc * load_lanes(ktc + 48);
    }
    store_lanes(s, s0), store_lanes(s + 16, s1), store_lanes(s + 32, s2), store_lanes(s + 48, s3);
    return;
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) s[j] = 0.0f;
  for (int64_t c = 0; c < dk; ++c) {
    const float qc = qs[c];
    const float* ktc = kt + c * kFlashKeyBlock;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s[j] += qc * ktc[j];
  }
}

// acc[0..dk) = acc · correction + Σ_j p[j] · vb[j][0..dk) (vb: n rows of d_k floats; rescale = false skips the
// multiply by correction, and its d_k FLOPs). For d_k a multiple of 16, 64 columns at a time stay in registers
// across the keys.
static inline void row_accumulate(float* acc, bool rescale, float correction, const float* p, const float* vb,
                                  int64_t n, int64_t dk) {
  if (dk % 64 == 0) {  // four named registers per 64 columns (an array of them is spilled to the stack)
    for (int64_t c0 = 0; c0 < dk; c0 += 64) {
      Lanes a0 = load_lanes(acc + c0), a1 = load_lanes(acc + c0 + 16), a2 = load_lanes(acc + c0 + 32),
            a3 = load_lanes(acc + c0 + 48);
      if (rescale) a0 *= correction, a1 *= correction, a2 *= correction, a3 *= correction;
      for (int64_t j = 0; j < n; ++j) {
        const Lanes pj = Lanes{} + p[j];
        const float* vj = vb + j * dk + c0;
        a0 += pj * load_lanes(vj), a1 += pj * load_lanes(vj + 16), a2 += pj * load_lanes(vj + 32),
            a3 += pj * load_lanes(vj + 48);
      }
      store_lanes(acc + c0, a0), store_lanes(acc + c0 + 16, a1), store_lanes(acc + c0 + 32, a2),
          store_lanes(acc + c0 + 48, a3);
    }
    return;
  }
  if (dk % 16 == 0) {
    for (int64_t c0 = 0; c0 < dk; c0 += 64) {
      const int64_t lanes = std::min<int64_t>(4, (dk - c0) / 16);
      Lanes a[4] = {};
      for (int64_t u = 0; u < lanes; ++u)
        a[u] = rescale ? load_lanes(acc + c0 + 16 * u) * correction : load_lanes(acc + c0 + 16 * u);
      for (int64_t j = 0; j < n; ++j) {
        const Lanes pj = Lanes{} + p[j];
        const float* vj = vb + j * dk + c0;
        for (int64_t u = 0; u < lanes; ++u) a[u] += pj * load_lanes(vj + 16 * u);
      }
      for (int64_t u = 0; u < lanes; ++u) store_lanes(acc + c0 + 16 * u, a[u]);
    }
    return;
  }
  if (rescale) {
#pragma omp simd
    for (int64_t c = 0; c < dk; ++c) acc[c] *= correction;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float pj = p[j];
    const float* vj = vb + j * dk;
#pragma omp simd
    for (int64_t c = 0; c < dk; ++c) acc[c] += pj * vj[c];
  }
}

// ALiBi: s[u] += m·(first + u), the key's j − i (an integer, converted: not a FLOP); 2 FLOPs a score.
static inline void add_alibi(float* s, float slope, int64_t first, int64_t n) {
#pragma omp simd
  for (int64_t u = 0; u < n; ++u) s[u] += slope * static_cast<float>(first + u);
}

// One (b, h): query blocks of kFlashQueryBlock rows against the key blocks holding keys the block's rows see; row
// i uses keys first_key(i) … i of them. Per row: running max m, sum l and the output accumulator, rescaled per
// block. Row strides: q_width for q and out, kv_width for k and v. Capped: each score s becomes c·tanh(s) (the
// query rows carry 1 / (c·√d_k)). slope ≠ 0: ALiBi's m_h·(j − i) added to each score.
template <typename T>
static void flash_forward_head(T* out, float* lse, const T* q, const T* k, const T* v, const AttentionShape& s,
                               float slope, float* ws) {
  const int64_t t = s.seq, d = s.q_width(), dkv = s.kv_width(), dk = s.head_dim;
  const float scale = flash_query_scale(s), cap = s.softcap;
  const bool scaled = scale != 1.0f;
  float* acc = ws;                                   // kFlashQueryBlock × d_k
  float* m = acc + kFlashQueryBlock * dk;            // kFlashQueryBlock
  float* l = m + kFlashQueryBlock;                   // kFlashQueryBlock
  float* kt = l + kFlashQueryBlock;                  // d_k × kFlashKeyBlock
  float* scores = kt + dk * kFlashKeyBlock;          // kFlashKeyBlock
  float* q_block = scores + kFlashKeyBlock;          // kFlashQueryBlock × d_k: the block's rows, scaled once
  float* v_block = q_block + kFlashQueryBlock * dk;  // kFlashKeyBlock × d_k: the key block's V rows, widened
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
    for (int64_t j0 = s.first_key(i0) / kFlashKeyBlock * kFlashKeyBlock; j0 < i0 + rows; j0 += kFlashKeyBlock) {
      const int64_t block = std::min(kFlashKeyBlock, i0 + rows - j0);
      transpose_block(kt, k + j0 * dkv, block, dkv, dk);
      for (int64_t j = 0; j < block; ++j)
        for (int64_t c = 0; c < dk; ++c) v_block[j * dk + c] = widen(v[(j0 + j) * dkv + c]);
      for (int64_t r = std::max<int64_t>(0, j0 - i0); r < rows; ++r) {
        const int64_t i = i0 + r, lo = std::max(j0, s.first_key(i)), hi = std::min(j0 + block - 1, i);
        if (hi < lo) continue;                         // the row's window starts after this block
        const int64_t n = hi - lo + 1, off = lo - j0;  // keys lo .. hi, at column off of the block
        row_scores(scores, q_block + r * dk, kt + off, n, dk);
        if (slope != 0.0f) add_alibi(scores, slope, lo - i, n);
        if (s.capped()) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) scores[j] = cap * tanh_simd(scores[j]);
        }
        const float scores_max = max_of(scores, n);  // n − 1 compares, + 1 against the running max
        const float block_max = scores_max > m[r] ? scores_max : m[r];
        const float correction = exp_simd(m[r] - block_max);  // ≈ 0 for the row's first block (m = −inf)
        float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = exp_simd(scores[j] - block_max);
          block_sum += scores[j];
        }
        l[r] = l[r] * correction + block_sum;
        m[r] = block_max;
        row_accumulate(acc + r * dk, true, correction, scores, v_block + off * dk, n, dk);
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

// One (b, h) backward: key blocks outer, query rows i ≥ j0 inner, in groups of kRowGroup rows. dQ accumulates
// across key blocks in a float32 T × d_k buffer (scaled and written at the end); the key block's dK and dV
// accumulate transposed (d_k × 64), so a group of full rows updates them as a rank-4 product held in registers.
constexpr int64_t kRowGroup = 4;

// dT[c][0..64) += Σ_r x_r[c] · y_r[0..64) for 4 rows (x_r: d_k values, y_r: 64 values each).
static inline void rank4_update(float* dt, const float* const x[4], const float* const y[4], int64_t dk) {
  Lanes y_reg[4][4];
  for (int r = 0; r < 4; ++r)
    for (int u = 0; u < 4; ++u) y_reg[r][u] = load_lanes(y[r] + 16 * u);
  for (int64_t c = 0; c < dk; ++c) {
    float* row = dt + c * kFlashKeyBlock;
    Lanes a0 = load_lanes(row), a1 = load_lanes(row + 16), a2 = load_lanes(row + 32), a3 = load_lanes(row + 48);
    for (int r = 0; r < 4; ++r) {
      const Lanes xr = Lanes{} + x[r][c];
      a0 += xr * y_reg[r][0], a1 += xr * y_reg[r][1], a2 += xr * y_reg[r][2], a3 += xr * y_reg[r][3];
    }
    store_lanes(row, a0), store_lanes(row + 16, a1), store_lanes(row + 32, a2), store_lanes(row + 48, a3);
  }
}

// A key block's dK and dV (held transposed, d_k × 64) out: rounded into dk_out / dv_out (row stride dkv), or, with
// the group's float32 sums (row stride d_k), `=` for the group's first member and `+=` after.
template <typename T>
static void store_block_grads(T* dk_out, T* dv_out, float* dk_sum, float* dv_sum, const float* dkt, const float* dvt,
                              int64_t block, int64_t dkv, int64_t dk, bool first) {
  for (int64_t j = 0; j < block; ++j)
    for (int64_t c = 0; c < dk; ++c) {
      const float gk = dkt[c * kFlashKeyBlock + j], gv = dvt[c * kFlashKeyBlock + j];
      if (dk_sum == nullptr) {
        dk_out[j * dkv + c] = narrow<T>(gk);
        dv_out[j * dkv + c] = narrow<T>(gv);
      } else {
        dk_sum[j * dk + c] = first ? gk : dk_sum[j * dk + c] + gk;
        dv_sum[j * dk + c] = first ? gv : dv_sum[j * dk + c] + gv;
      }
    }
}

// Row strides: q_width for q, o, dO, dQ, kv_width for k, v, dK, dV. With dk_sum (T × d_k float32, and dv_sum), the
// head's dK and dV go into the group's sums (`=` for its first member, `+=` after) instead of dk_out. A key block
// gets the rows that see one of its keys: j0 … j0 + block + W − 2.
template <typename T>
static void flash_backward_head(T* dq, T* dk_out, T* dv_out, const T* q, const T* k, const T* v, const T* o,
                                const T* dout, const float* lse, const AttentionShape& s, float slope, float* ws,
                                float* dk_sum, float* dv_sum, bool first) {
  const int64_t t = s.seq, d = s.q_width(), dkv = s.kv_width(), dk = s.head_dim;
  const float scale = flash_query_scale(s), cap = s.softcap;
  const bool scaled = scale != 1.0f;
  float* dq_acc = ws;                                 // T × d_k
  float* delta = dq_acc + t * dk;                     // T: D_i = dO_i · O_i
  float* kt = delta + t;                              // d_k × 64
  float* vt = kt + dk * kFlashKeyBlock;               // d_k × 64
  float* dkt = vt + dk * kFlashKeyBlock;              // d_k × 64: the block's dK, transposed
  float* dvt = dkt + dk * kFlashKeyBlock;             // d_k × 64: the block's dV, transposed
  float* p = dvt + dk * kFlashKeyBlock;               // kRowGroup × 64
  float* dp = p + kRowGroup * kFlashKeyBlock;         // kRowGroup × 64
  float* ds = dp + kRowGroup * kFlashKeyBlock;        // kRowGroup × 64
  float* q_scaled = ds + kRowGroup * kFlashKeyBlock;  // T × d_k: the head's query rows, scaled once
  float* k_block = q_scaled + t * dk;                 // 64 × d_k: the key block's K rows, widened
  float* do_rows = k_block + dk * kFlashKeyBlock;     // kRowGroup × d_k: dO rows, widened
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
    transpose_block(kt, k + j0 * dkv, block, dkv, dk);
    transpose_block(vt, v + j0 * dkv, block, dkv, dk);
    for (int64_t j = 0; j < block; ++j)
      for (int64_t c = 0; c < dk; ++c) k_block[j * dk + c] = widen(k[(j0 + j) * dkv + c]);
    std::fill_n(dkt, dk * kFlashKeyBlock, 0.0f);
    std::fill_n(dvt, dk * kFlashKeyBlock, 0.0f);
    const int64_t row_end = std::min(t, j0 + block + s.span() - 1);
    for (int64_t i0 = j0; i0 < row_end; i0 += kRowGroup) {
      const int64_t rows = std::min(kRowGroup, row_end - i0);
      bool full = rows == kRowGroup;
      int64_t n_of[kRowGroup], off_of[kRowGroup];
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r, lo = std::max(j0, s.first_key(i)), n = std::min(j0 + block - 1, i) - lo + 1;
        const int64_t off = lo - j0;  // keys lo … lo + n − 1, at column off of the block
        n_of[r] = n, off_of[r] = off;
        full = full && n == kFlashKeyBlock;
        float *pr = p + r * kFlashKeyBlock, *dpr = dp + r * kFlashKeyBlock, *dsr = ds + r * kFlashKeyBlock;
        float* dor = do_rows + r * dk;
        for (int64_t c = 0; c < dk; ++c) dor[c] = widen(dout[i * d + c]);
        row_scores(pr, q_scaled + i * dk, kt + off, n, dk);  // s
        if (slope != 0.0f) add_alibi(pr, slope, j0 + off - i, n);
        row_scores(dpr, dor, vt + off, n, dk);  // dP = dO_i · V_j, through Vᵀ like the scores
        const float lse_i = lse[i], delta_i = delta[i];
        if (s.capped()) {  // s_c = c·tanh(s); dS = p·(dP − D)·c·(1 − tanh²) = p·(dP − D)·(c − s_c·tanh)
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            const float u = tanh_simd(pr[j]), sc = cap * u;
            pr[j] = exp_simd(sc - lse_i);
            dsr[j] = pr[j] * (dpr[j] - delta_i) * (cap - sc * u);
          }
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) {
            pr[j] = exp_simd(pr[j] - lse_i);
            dsr[j] = pr[j] * (dpr[j] - delta_i);
          }
        }
        row_accumulate(dq_acc + i * dk, false, 1.0f, dsr, k_block + off * dk, n, dk);  // dQ_i += Σ_j dS_j K_j
      }
      if (full) {  // dV += Σ_r dO_r ⊗ p_r, dK += Σ_r q_r ⊗ dS_r
        const float* const dos[4] = {do_rows, do_rows + dk, do_rows + 2 * dk, do_rows + 3 * dk};
        const float* const ps[4] = {p, p + 64, p + 128, p + 192};
        const float* const qs[4] = {q_scaled + i0 * dk, q_scaled + (i0 + 1) * dk, q_scaled + (i0 + 2) * dk,
                                    q_scaled + (i0 + 3) * dk};
        const float* const dss[4] = {ds, ds + 64, ds + 128, ds + 192};
        rank4_update(dvt, dos, ps, dk);
        rank4_update(dkt, qs, dss, dk);
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t n = n_of[r];
          const float *pr = p + r * kFlashKeyBlock, *dsr = ds + r * kFlashKeyBlock;
          const float *dor = do_rows + r * dk, *qr = q_scaled + (i0 + r) * dk;
          for (int64_t c = 0; c < dk; ++c) {
            float* dvc = dvt + c * kFlashKeyBlock + off_of[r];
            float* dkc = dkt + c * kFlashKeyBlock + off_of[r];
            const float g = dor[c], x = qr[c];
#pragma omp simd
            for (int64_t j = 0; j < n; ++j) {
              dvc[j] += g * pr[j];
              dkc[j] += x * dsr[j];
            }
          }
        }
      }
    }
    store_block_grads(dk_out + j0 * dkv, dv_out + j0 * dkv, dk_sum == nullptr ? nullptr : dk_sum + j0 * dk,
                      dv_sum == nullptr ? nullptr : dv_sum + j0 * dk, dkt, dvt, block, dkv, dk, first);
  }
  for (int64_t i = 0; i < t; ++i)
    for (int64_t c = 0; c < dk; ++c)
      dq[i * d + c] = narrow<T>(scaled ? dq_acc[i * dk + c] * scale : dq_acc[i * dk + c]);
}

Tensor flash_attention_forward(FlashAttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t num_heads, int64_t num_kv_heads, std::string_view name,
                               const AttentionScores& scores) {
  const AttentionShape sh = check_attention_inputs(q, k, v, num_heads, num_kv_heads, "flash attention", scores);
  const int64_t b = sh.batch, t = sh.seq, h = sh.heads, g = sh.group(), dk = sh.head_dim;
  const int64_t d = sh.q_width(), dkv = sh.kv_width();
  const std::string prefix(name);
  const int threads = omp_get_max_threads();
  const int64_t per_thread = flash_forward_workspace_floats(dk);
  const FlashAttentionTensors decl = flash_attention_forward_tensors(sh, q.dtype(), threads);
  Tensor lse = decl.lse.allocate(prefix);
  Tensor out = decl.ctx.allocate(prefix);
  Tensor workspace = decl.workspace.allocate(prefix);
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
        const int64_t base = bi * t * d + hi * dk, kv_base = bi * t * dkv + (hi / g) * dk;
        flash_forward_head(po + base, pl + (bi * h + hi) * t, pq + base, pk + kv_base, pv + kv_base, sh, sh.slope(hi),
                           w);
      }
  });
  record.count = flash_attention_forward_count(sh, q.dtype());
  workspace.reset();
  saved.q = q;
  saved.k = k;
  saved.v = v;
  saved.out = out;
  saved.lse = lse;
  saved.shape = sh;
  saved.name = prefix;
  return out;
}

void flash_attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                              FlashAttentionSaved& saved) {
  check_arg(saved.lse.defined(), "flash attention backward: nothing saved (forward not run, or backward run twice)");
  const AttentionShape sh = saved.shape;
  check_attention_inputs(grad_q, grad_k, grad_v, sh.heads, sh.kv_heads, "flash attention backward",
                         {sh.window, sh.softcap, sh.alibi_bias_max});
  check_arg(grad_q.shape() == saved.q.shape() && grad_k.shape() == saved.k.shape() &&
                grad_ctx.shape() == saved.q.shape() && grad_ctx.is_contiguous() && grad_q.dtype() == saved.q.dtype() &&
                grad_ctx.dtype() == saved.q.dtype(),
            "flash attention backward: gradients must have the shapes of q {} and k {} and dtype {}",
            saved.q.shape_str(), saved.k.shape_str(), dtype_name(saved.q.dtype()));
  const int64_t b = sh.batch, t = sh.seq, h = sh.heads, kvh = sh.kv_heads, g = sh.group(), dk = sh.head_dim;
  const int64_t d = sh.q_width(), dkv = sh.kv_width();
  const int threads = omp_get_max_threads();
  const int64_t per_thread = flash_backward_workspace_floats(t, dk);
  const int64_t parts = flash_backward_parts(sh, threads);
  const FlashAttentionBackwardTensors decl = flash_attention_backward_tensors(sh, threads);
  Tensor workspace = decl.workspace.allocate(saved.name);
  Tensor partials = decl.partials ? decl.partials->allocate(saved.name) : Tensor();
  OpRecord record("attention");
  dispatch_floating(grad_q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *pq = data_as<T>(saved.q), *pk = data_as<T>(saved.k), *pv = data_as<T>(saved.v);
    const T *po = data_as<T>(saved.out), *pdo = data_as<T>(grad_ctx);
    T *pdq = data_as<T>(grad_q), *pdk = data_as<T>(grad_k), *pdv = data_as<T>(grad_v);
    const float* pl = saved.lse.data();
    float* ws = workspace.data();
    float* pp = partials.defined() ? partials.data() : nullptr;
    // (batch, K/V head, part): the part's query heads in turn, their dK and dV summed into the part's partial.
#pragma omp parallel for collapse(3) schedule(dynamic, 1)
    for (int64_t bi = 0; bi < b; ++bi)
      for (int64_t kv = 0; kv < kvh; ++kv)
        for (int64_t part = 0; part < parts; ++part) {
          float* w = ws + omp_get_thread_num() * per_thread;
          float* dk_sum = pp != nullptr ? pp + ((bi * kvh + kv) * parts + part) * 2 * t * dk : nullptr;
          float* dv_sum = pp != nullptr ? dk_sum + t * dk : nullptr;
          const int64_t kv_base = bi * t * dkv + kv * dk;
          for (int64_t member = part; member < g; member += parts) {
            const int64_t hi = kv * g + member, base = bi * t * d + hi * dk;
            flash_backward_head(pdq + base, pdk + kv_base, pdv + kv_base, pq + base, pk + kv_base, pv + kv_base,
                                po + base, pdo + base, pl + (bi * h + hi) * t, sh, sh.slope(hi), w, dk_sum, dv_sum,
                                member == part);
          }
        }
    if (pp == nullptr) return;
      // dK, dV = the sum of the parts' partials, rounded once.
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t unit = 0; unit < b * kvh; ++unit)
      for (int64_t i = 0; i < t; ++i) {
        const int64_t bi = unit / kvh, kv = unit % kvh, row = bi * t * dkv + i * dkv + kv * dk;
        for (int64_t c = 0; c < dk; ++c) {
          float sk = 0.0f, sv = 0.0f;
          for (int64_t part = 0; part < parts; ++part) {
            const float* base = pp + (unit * parts + part) * 2 * t * dk + i * dk + c;
            sk = part == 0 ? base[0] : sk + base[0];
            sv = part == 0 ? base[t * dk] : sv + base[t * dk];
          }
          pdk[row + c] = narrow<T>(sk);
          pdv[row + c] = narrow<T>(sv);
        }
      }
  });
  record.count = flash_attention_backward_count(sh, grad_q.dtype());
  partials.reset();
  workspace.reset();
  saved.q.reset();
  saved.k.reset();
  saved.v.reset();
  saved.out.reset();
  saved.lse.reset();
}

}  // namespace reckon
