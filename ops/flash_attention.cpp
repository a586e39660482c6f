#include "ops/flash_attention.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/attention.h"
#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/kernel_isa.h"
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
           {threads, flash_forward_workspace_floats(s.seq, s.head_dim, dtype)},
           Lifetime::temporary}};
}

int64_t flash_backward_parts(const AttentionShape& s, int64_t threads) {
  if (s.group() == 1) return 1;
  const int64_t units = s.batch * s.kv_heads;
  return std::min(s.group(), (threads + units - 1) / units);
}

FlashAttentionBackwardTensors flash_attention_backward_tensors(const AttentionShape& s, DType dtype, int64_t threads) {
  FlashAttentionBackwardTensors out{{".grad_workspace",
                                     Category::temporary,
                                     DType::f32,
                                     {threads, flash_backward_workspace_floats(s.seq, s.head_dim, dtype)},
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

int64_t flash_forward_tiled_floats(int64_t t, int64_t dk, int64_t operand_bytes);
int64_t flash_backward_tiled_floats(int64_t t, int64_t dk, int64_t operand_bytes);

// Room for every path the shape can take on any CPU: the reference kernels, and with d_k a multiple of 16 the
// float32 tiles and, for bf16 storage, the bf16 tiles.
int64_t flash_forward_workspace_floats(int64_t t, int64_t dk, DType dtype) {
  int64_t floats = 2 * kFlashQueryBlock * dk + 2 * kFlashQueryBlock + 2 * dk * kFlashKeyBlock + kFlashKeyBlock;
  if (dk % 16 == 0) floats = std::max(floats, flash_forward_tiled_floats(t, dk, 4));
  if (dk % 16 == 0 && dtype == DType::bf16) floats = std::max(floats, flash_forward_tiled_floats(t, dk, 2));
  return floats;
}
int64_t flash_backward_workspace_floats(int64_t t, int64_t dk, DType dtype) {
  // Reference: dQ, scaled Q (T × d_k each), D (T); Kᵀ, Vᵀ, dKᵀ, dVᵀ, K rows (d_k × 64 each); p, dP, dS (4 × 64
  // each); 4 dO rows (4 × d_k).
  int64_t floats = 2 * t * dk + t + 5 * dk * kFlashKeyBlock + 12 * kFlashKeyBlock + 4 * dk;
  if (dk % 16 == 0) floats = std::max(floats, flash_backward_tiled_floats(t, dk, 4));
  if (dk % 16 == 0 && dtype == DType::bf16) floats = std::max(floats, flash_backward_tiled_floats(t, dk, 2));
  return floats;
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

// ---- Tiled kernels on the CPU's vector and matrix instructions (runtime/kernel_isa.h) ----
// The same algorithm, blocks and FLOPs as the reference kernels above, with every product of the two directions a
// GEMM on one tile: C (rows × n, float32) (+)= A (rows × K, row-major) · B (K × n) with B's K in groups: operands E =
// float (groups of 1: AVX-512F FMAs) or bf16 bits (uint16_t; groups of 2 in a uint32, the lower first: the layout
// of AMX's TDPBF16PS and of VDPBF16PS, which add both products of a pair into one float32 lane). The bf16 operands
// are rounded once where they are made: the scaled query rows (exact when 1/√d_k is a power of 2, as at d_k =
// 64), P before P·V and dV, dS before dQ and dK; scores, the softmax, row sums and every accumulator stay float32
// (FlashAttention-2 rounds P and dS for its tensor cores the same way). Tiles are 64 query rows × 64 keys in
// full-width registers, the buffers padded with zeros to 64-row multiples: positions a row does not see (above the
// diagonal, before its window, past T) are masked to p = dS = 0, so the products add exact zeros there; those
// lanes are not counted (the counts stay the visible scores').
// GCC 12's AVX-512 headers start masked intrinsics from _mm512_undefined_*, which -W(maybe-)uninitialized reports
// at every inlined use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define RECKON_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define RECKON_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))

template <typename E>
using Group = std::conditional_t<std::is_same_v<E, float>, float, uint32_t>;  // K elements of B in one slot
template <typename E>
constexpr int64_t kGroup = std::is_same_v<E, float> ? 1 : 2;

static inline uint16_t bf16_bits(float x) { return to_bf16(x).bits; }
template <typename E>
static inline E operand(float x) {
  if constexpr (std::is_same_v<E, float>)
    return x;
  else
    return bf16_bits(x);
}
// K elements p[0 … G) of storage T as one group of B.
template <typename E, typename T>
static inline Group<E> group_of(const T* p) {
  if constexpr (std::is_same_v<E, float>)
    return widen(p[0]);
  else
    return static_cast<uint32_t>(operand<E>(widen(p[0]))) | static_cast<uint32_t>(operand<E>(widen(p[1]))) << 16;
}

// C (rows × cols, row stride ldc) (+)= A · B: A's row m the K = G·steps elements at a + m·lda, B's row s the cols
// groups at b + s·ldb. rows a multiple of 32 (AMX) or 4, cols of 32 (AMX) or 16, steps of 16 (AMX).
template <typename E>
using TileGemm = void (*)(float* c, int64_t ldc, int64_t rows, int64_t cols, const E* a, int64_t lda, const Group<E>* b,
                          int64_t ldb, int64_t steps, bool accumulate);

// 4 rows × NR registers of 16 float32 held across K: FMAs on float operands, VDPBF16PS on bf16 pairs.
template <typename E, int NR>
RECKON_AVX512 static void vector_tile(float* c, int64_t ldc, const E* a, int64_t lda, const Group<E>* b, int64_t ldb,
                                      int64_t steps, bool accumulate) {
  __m512 acc[4][NR];
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m)
#pragma GCC unroll 4
    for (int u = 0; u < NR; ++u) acc[m][u] = accumulate ? _mm512_loadu_ps(c + m * ldc + 16 * u) : _mm512_setzero_ps();
  for (int64_t s = 0; s < steps; ++s) {
    if constexpr (std::is_same_v<E, float>) {
      __m512 bv[NR];
#pragma GCC unroll 4
      for (int u = 0; u < NR; ++u) bv[u] = _mm512_loadu_ps(b + s * ldb + 16 * u);
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        const __m512 av = _mm512_set1_ps(a[m * lda + s]);
#pragma GCC unroll 4
        for (int u = 0; u < NR; ++u) acc[m][u] = _mm512_fmadd_ps(av, bv[u], acc[m][u]);
      }
    } else {
      __m512bh bv[NR];
#pragma GCC unroll 4
      for (int u = 0; u < NR; ++u) bv[u] = (__m512bh)_mm512_loadu_si512(b + s * ldb + 16 * u);
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        uint32_t pair;
        std::memcpy(&pair, a + m * lda + 2 * s, sizeof pair);
        const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 4
        for (int u = 0; u < NR; ++u) acc[m][u] = _mm512_dpbf16_ps(acc[m][u], av, bv[u]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m)
#pragma GCC unroll 4
    for (int u = 0; u < NR; ++u) _mm512_storeu_ps(c + m * ldc + 16 * u, acc[m][u]);
}

template <typename E>
static void vector_gemm(float* c, int64_t ldc, int64_t rows, int64_t cols, const E* a, int64_t lda, const Group<E>* b,
                        int64_t ldb, int64_t steps, bool accumulate) {
  using Tile = void (*)(float*, int64_t, const E*, int64_t, const Group<E>*, int64_t, int64_t, bool);
  static constexpr Tile tiles[4] = {vector_tile<E, 1>, vector_tile<E, 2>, vector_tile<E, 3>, vector_tile<E, 4>};
  for (int64_t n0 = 0; n0 < cols; n0 += 64) {
    const Tile tile = tiles[std::min<int64_t>(4, (cols - n0) / 16) - 1];
    for (int64_t m0 = 0; m0 < rows; m0 += 4)
      tile(c + m0 * ldc + n0, ldc, a + m0 * lda, lda, b + n0, ldb, steps, accumulate);
  }
}

// AMX: every tile 16 rows × 64 bytes (A: 16 rows × 32 bf16; B: 16 pairs × 16 columns; C: 16 × 16 float32),
// C in 2 × 2 blocks (tiles 0–3), A in 4–5, B in 6–7.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
RECKON_AMX static void amx_configure() {
  static const AmxTileConfig config;
  _tile_loadconfig(&config);
}
RECKON_AMX static void amx_release() { _tile_release(); }

RECKON_AMX static void amx_gemm(float* c, int64_t ldc, int64_t rows, int64_t cols, const uint16_t* a, int64_t lda,
                                const uint32_t* b, int64_t ldb, int64_t steps, bool accumulate) {
  const int64_t sc = ldc * 4, sa = lda * 2, sb = ldb * 4;
  for (int64_t m0 = 0; m0 < rows; m0 += 32)
    for (int64_t n0 = 0; n0 < cols; n0 += 32) {
      float* c0 = c + m0 * ldc + n0;
      float* c1 = c0 + 16 * ldc;
      if (accumulate) {
        _tile_loadd(0, c0, sc);
        _tile_loadd(1, c0 + 16, sc);
        _tile_loadd(2, c1, sc);
        _tile_loadd(3, c1 + 16, sc);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int64_t s = 0; s < steps; s += 16) {
        _tile_loadd(4, a + m0 * lda + 2 * s, sa);
        _tile_loadd(5, a + (m0 + 16) * lda + 2 * s, sa);
        _tile_loadd(6, b + s * ldb + n0, sb);
        _tile_loadd(7, b + s * ldb + n0 + 16, sb);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c0, sc);
      _tile_stored(1, c0 + 16, sc);
      _tile_stored(2, c1, sc);
      _tile_stored(3, c1 + 16, sc);
    }
}

template <typename E>
static bool is_amx(TileGemm<E> gemm) {
  if constexpr (std::is_same_v<E, uint16_t>)
    return gemm == amx_gemm;
  else
    return false;
}

// Holds the AMX tile configuration for one thread's head call.
struct TileScope {
  explicit TileScope(bool amx) : amx(amx) {
    if (amx) amx_configure();
  }
  ~TileScope() {
    if (amx) amx_release();
  }
  bool amx;
};

// Which kernels run this call: the reference, float32 tiles (float storage, or bf16 widened where the CPU lacks
// VDPBF16PS), VDPBF16PS or AMX tiles. Tiles need d_k a multiple of 16 (AMX: 32).
enum class FlashPath { reference, f32_tiles, vdpbf16, amx };
static FlashPath flash_path(const AttentionShape& s, DType dtype) {
  if (!kernel_isa_at_least(KernelIsa::avx512) || s.head_dim % 16 != 0) return FlashPath::reference;
  if (dtype == DType::bf16 && kernel_isa_at_least(KernelIsa::amx) && s.head_dim % 32 == 0) return FlashPath::amx;
  if (dtype == DType::bf16 && kernel_isa_at_least(KernelIsa::avx512_bf16)) return FlashPath::vdpbf16;
  return FlashPath::f32_tiles;
}

// exp_simd (runtime/simd_math.h) on 16 lanes: the same clamp, reduction and polynomial; NaN stays NaN.
RECKON_AVX512 static inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.37626f), _mm512_max_ps(_mm512_set1_ps(-87.33654f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 er = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(er, _mm512_castsi512_ps(e));
}

// Lanes off … off + n − 1 of a 64-key row, as four 16-lane masks.
static inline void row_masks(__mmask16 k[4], int64_t off, int64_t n) {
  const uint64_t bits = (n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1) << off;
  for (int u = 0; u < 4; ++u) k[u] = static_cast<__mmask16>(bits >> (16 * u));
}

// 64 float32 of a row into E (bf16: rounded to nearest even).
RECKON_AVX512 static inline void store_row(float* out, const __m512 x[4]) {
  for (int u = 0; u < 4; ++u) _mm512_storeu_ps(out + 16 * u, x[u]);
}
RECKON_AVX512 static inline void store_row(uint16_t* out, const __m512 x[4]) {
  _mm512_storeu_si512(out, (__m512i)_mm512_cvtne2ps_pbh(x[1], x[0]));
  _mm512_storeu_si512(out + 32, (__m512i)_mm512_cvtne2ps_pbh(x[3], x[2]));
}

// One row of a forward tile: scores s (64 floats), keys off … off + n − 1 visible. m becomes max(m, their max),
// correction = exp(m_old − m_new); p = exp(s − m_new) into the P row (0 elsewhere); returns Σ p.
template <typename E>
RECKON_AVX512 static float softmax_row(const float* s, E* p_row, int64_t off, int64_t n, float& m, float& correction) {
  __mmask16 k[4];
  row_masks(k, off, n);
  __m512 x[4], mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int u = 0; u < 4; ++u) {
    x[u] = _mm512_loadu_ps(s + 16 * u);
    mx = _mm512_mask_max_ps(mx, k[u], mx, x[u]);
  }
  const float scores_max = _mm512_reduce_max_ps(mx);
  const float block_max = scores_max > m ? scores_max : m;
  correction = exp_simd(m - block_max);
  m = block_max;
  __m512 sum = _mm512_setzero_ps();
  const __m512 mv = _mm512_set1_ps(block_max);
  for (int u = 0; u < 4; ++u) {
    x[u] = _mm512_maskz_mov_ps(k[u], exp16(_mm512_sub_ps(x[u], mv)));
    sum = _mm512_add_ps(sum, x[u]);
  }
  store_row(p_row, x);
  return _mm512_reduce_add_ps(sum);
}

// Groups along the head dimension, keys across: out[g][j] = x_j[G·g … G·g + G) for the n ≤ 64 rows x_j (row stride
// d), zero for j ≥ n: the B operand of a product over d_k (scores, dP).
// 16 32-bit values at p + k·stride bytes (k < 16), zero where `valid` is clear.
RECKON_AVX512 static inline __m512i gather16(const void* p, int64_t stride, __mmask16 valid) {
  const __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(static_cast<int>(stride)));
  return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, offsets, p, 1);
}
static inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << n) - 1);
}

template <typename E, typename T>
RECKON_AVX512 static void pack_along_dim(Group<E>* out, const T* x, int64_t n, int64_t d, int64_t dk) {
  constexpr bool raw = std::is_same_v<E, float> ? std::is_same_v<T, float> : std::is_same_v<T, bf16>;
  if constexpr (raw) {  // a group is the storage's own bits: gather 16 keys' groups at a time
    for (int64_t g = 0; g < dk / kGroup<E>; ++g)
      for (int64_t j0 = 0; j0 < kFlashKeyBlock; j0 += 16)
        _mm512_storeu_si512(
            out + g * kFlashKeyBlock + j0,
            gather16(x + j0 * d + kGroup<E> * g, d * static_cast<int64_t>(sizeof(T)), first_lanes(n - j0)));
  } else {
    for (int64_t j = 0; j < kFlashKeyBlock; ++j)
      for (int64_t g = 0; g < dk / kGroup<E>; ++g)
        out[g * kFlashKeyBlock + j] = j < n ? group_of<E>(x + j * d + kGroup<E> * g) : Group<E>{0};
  }
}

// Groups along the rows, the head dimension across: out[j/G][c] = (x_j[c], …, x_{j+G−1}[c]) for rows j < n (row
// stride d), zero from n to `padded` (a multiple of G): the B operand of a product over keys (P·V, dS·K).
template <typename E, typename T>
static void pack_along_rows(Group<E>* out, const T* x, int64_t n, int64_t padded, int64_t d, int64_t dk) {
  for (int64_t j = 0; j < padded; j += kGroup<E>)
#pragma omp simd
    for (int64_t c = 0; c < dk; ++c) {
      if constexpr (std::is_same_v<E, float>) {
        out[j * dk + c] = j < n ? widen(x[j * d + c]) : 0.0f;
      } else {
        const uint32_t lo = j < n ? operand<E>(widen(x[j * d + c])) : 0;
        const uint32_t hi = j + 1 < n ? operand<E>(widen(x[(j + 1) * d + c])) : 0;
        out[(j / 2) * dk + c] = lo | hi << 16;
      }
    }
}

static int64_t padded_rows(int64_t t) { return (t + kFlashKeyBlock - 1) / kFlashKeyBlock * kFlashKeyBlock; }

int64_t flash_forward_tiled_floats(int64_t t, int64_t dk, int64_t operand_bytes) {
  // In E: K grouped along d_k and V grouped along keys for the whole head (T padded to 64), the block's scaled
  // query rows (64 × d_k) and P (64 × 64); in float32: scores (64 × 64), accumulators (64 × d_k), m, l.
  const int64_t tp = padded_rows(t), kq = kFlashQueryBlock, kb = kFlashKeyBlock;
  return (2 * tp * dk + kq * dk + kq * kb) * operand_bytes / 4 + kq * kb + kq * dk + 2 * kq;
}

// One (b, h) forward on `gemm`; row strides as flash_forward_head.
template <typename T, typename E>
static void flash_forward_head_tiled(TileGemm<E> gemm, T* out, float* lse, const T* q, const T* k, const T* v,
                                     const AttentionShape& s, float slope, float* ws) {
  const int64_t t = s.seq, d = s.q_width(), dkv = s.kv_width(), dk = s.head_dim, tp = padded_rows(t);
  const int64_t kq = kFlashQueryBlock, kb = kFlashKeyBlock, g = kGroup<E>;
  const float scale = flash_query_scale(s), cap = s.softcap;
  auto* kp = reinterpret_cast<Group<E>*>(ws);                  // T/64 blocks × d_k/G × 64
  Group<E>* vp = kp + tp * dk / g;                             // T/G × d_k
  auto* q_block = reinterpret_cast<E*>(vp + tp * dk / g);      // 64 × d_k
  auto* p_block = q_block + kq * dk;                           // 64 × 64
  auto* scores = reinterpret_cast<float*>(p_block + kq * kb);  // 64 × 64
  float* acc = scores + kq * kb;                               // 64 × d_k
  float* m = acc + kq * dk;
  float* l = m + kq;
  const TileScope tiles(is_amx(gemm));
  for (int64_t j0 = 0; j0 < tp; j0 += kb) {
    const int64_t n = std::min(kb, t - j0);
    pack_along_dim<E>(kp + j0 * dk / g, k + j0 * dkv, n, dkv, dk);
    pack_along_rows<E>(vp + j0 / g * dk, v + j0 * dkv, n, kb, dkv, dk);
  }
  for (int64_t i0 = 0; i0 < t; i0 += kq) {
    const int64_t rows = std::min(kq, t - i0);
    for (int64_t r = 0; r < kq; ++r)
#pragma omp simd
      for (int64_t c = 0; c < dk; ++c) {
        const float x = r < rows ? widen(q[(i0 + r) * d + c]) : 0.0f;
        q_block[r * dk + c] = operand<E>(scale != 1.0f ? x * scale : x);
      }
    std::fill_n(acc, kq * dk, 0.0f);
    std::fill_n(m, rows, -std::numeric_limits<float>::infinity());
    std::fill_n(l, rows, 0.0f);
    std::fill_n(p_block, kq * kb, E{0});
    for (int64_t j0 = s.first_key(i0) / kb * kb; j0 < i0 + rows; j0 += kb) {
      const int64_t block = std::min(kb, i0 + rows - j0);
      gemm(scores, kb, kq, kb, q_block, dk, kp + j0 * dk / g, kb, dk / g, false);  // S = Q Kᵀ
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r, lo = std::max(j0, s.first_key(i)), hi = std::min(j0 + block - 1, i);
        E* pr = p_block + r * kb;
        if (hi < lo) {  // the row's window starts after this block: P = 0 adds nothing
          std::fill_n(pr, kb, E{0});
          continue;
        }
        const int64_t n = hi - lo + 1, off = lo - j0;
        float* sr = scores + r * kb;
        if (slope != 0.0f) add_alibi(sr + off, slope, lo - i, n);
        if (s.capped()) {
#pragma omp simd
          for (int64_t j = off; j < off + n; ++j) sr[j] = cap * tanh_simd(sr[j]);
        }
        float correction = 0.0f;
        const float block_sum = softmax_row(sr, pr, off, n, m[r], correction);
        l[r] = l[r] * correction + block_sum;
        float* ar = acc + r * dk;
#pragma omp simd
        for (int64_t c = 0; c < dk; ++c) ar[c] *= correction;
      }
      gemm(acc, dk, kq, dk, p_block, kb, vp + j0 / g * dk, dk, kb / g, true);  // acc += P V
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

int64_t flash_backward_tiled_floats(int64_t t, int64_t dk, int64_t operand_bytes) {
  // In E: scaled Q rows, dO rows and their transposes (T × d_k each, T padded to 64), the key block's K and V
  // grouped along d_k and K grouped along keys (64 × d_k each), P and dS for the products (3 × 64 × 64; float32
  // operands use the tiles themselves); in float32: dQ (T × d_k), D (T), dKᵀ, dVᵀ (d_k × 64), S then p, dP then
  // dS (64 × 64 each).
  const int64_t tp = padded_rows(t), kq = kFlashQueryBlock, kb = kFlashKeyBlock;
  const int64_t tile_operands = operand_bytes == 4 ? 0 : 3 * kq * kb;
  return (4 * tp * dk + 3 * dk * kb + tile_operands) * operand_bytes / 4 + tp * dk + t + 2 * dk * kb + 2 * kq * kb;
}

// p = exp(s − lse) and dS = p·(dP − D) (capped: s_c = c·tanh(s), dS ·= c − s_c·tanh(s)) on one row's visible keys
// off … off + n − 1, in place in s and dp (64 each), zero elsewhere.
RECKON_AVX512 static void backward_row(float* s, float* dp, int64_t off, int64_t n, float lse, float delta,
                                       const AttentionShape& sh) {
  if (sh.capped()) {
    const float cap = sh.softcap;
    for (int64_t j = 0; j < kFlashKeyBlock; ++j) {
      if (j < off || j >= off + n) {
        s[j] = dp[j] = 0.0f;
        continue;
      }
      const float u = tanh_simd(s[j]), c = cap * u;
      s[j] = exp_simd(c - lse);
      dp[j] = s[j] * (dp[j] - delta) * (cap - c * u);
    }
    return;
  }
  __mmask16 k[4];
  row_masks(k, off, n);
  const __m512 lv = _mm512_set1_ps(lse), dv = _mm512_set1_ps(delta);
  for (int u = 0; u < 4; ++u) {
    const __m512 p = _mm512_maskz_mov_ps(k[u], exp16(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * u), lv)));
    _mm512_storeu_ps(s + 16 * u, p);
    _mm512_storeu_ps(dp + 16 * u, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(dp + 16 * u), dv)));
  }
}

// bf16 operands of one backward tile: p (and dS) rows r, r + 1 rounded into a row of pairs along rows (64
// uint32), dS also into its rows.
RECKON_AVX512 static inline __m512i pair_rows(const float* a, const float* b) {
  const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a)));
  const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b)));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}
RECKON_AVX512 static void pack_tile(uint32_t* p_pairs, uint16_t* ds_rows, uint32_t* ds_pairs, const float* p,
                                    const float* ds) {
  const int64_t kb = kFlashKeyBlock;
  for (int64_t r = 0; r < kFlashQueryBlock; r += 2)
    for (int u = 0; u < 4; ++u) {
      const int64_t x = r * kb + 16 * u;
      _mm512_storeu_si512(p_pairs + r / 2 * kb + 16 * u, pair_rows(p + x, p + x + kb));
      _mm512_storeu_si512(ds_pairs + r / 2 * kb + 16 * u, pair_rows(ds + x, ds + x + kb));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ds_rows + x),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(ds + x)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ds_rows + x + kb),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(ds + x + kb)));
    }
}

// x (t rows of d_k, row stride d) into rows (tp × d_k) and its transpose (d_k × tp) in E, zero past t; `scale` ≠ 1
// multiplies each element before it is rounded.
template <typename E, typename T>
RECKON_AVX512 static void pack_rows_and_transpose(E* rows, E* transposed, const T* x, int64_t t, int64_t tp, int64_t d,
                                                  int64_t dk, float scale) {
  for (int64_t i = 0; i < tp; ++i)
#pragma omp simd
    for (int64_t c = 0; c < dk; ++c) {
      const float value = i < t ? widen(x[i * d + c]) : 0.0f;
      rows[i * dk + c] = operand<E>(scale != 1.0f ? value * scale : value);
    }
  // 16 rows of a column pair (bf16) or of a column (float) per gather.
  for (int64_t c = 0; c < dk; c += kGroup<E>)
    for (int64_t i0 = 0; i0 < tp; i0 += 16) {
      const __m512i g = gather16(rows + i0 * dk + c, dk * static_cast<int64_t>(sizeof(E)), 0xffff);
      if constexpr (std::is_same_v<E, float>) {
        _mm512_storeu_si512(transposed + c * tp + i0, g);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(transposed + c * tp + i0), _mm512_cvtepi32_epi16(g));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(transposed + (c + 1) * tp + i0),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)));
      }
    }
}

// A key block's dKᵀ and dVᵀ (d_k × 64, float32) out, as store_block_grads: 16 columns of a key per gather.
template <typename T>
RECKON_AVX512 static void store_block_grads_tiled(T* dk_out, T* dv_out, float* dk_sum, float* dv_sum, const float* dkt,
                                                  const float* dvt, int64_t block, int64_t dkv, int64_t dk,
                                                  bool first) {
  for (int64_t j = 0; j < block; ++j)
    for (int64_t c0 = 0; c0 < dk; c0 += 16) {
      const float* src[2] = {dkt + c0 * kFlashKeyBlock + j, dvt + c0 * kFlashKeyBlock + j};
      T* out[2] = {dk_out + j * dkv + c0, dv_out + j * dkv + c0};
      float* sum[2] = {dk_sum == nullptr ? nullptr : dk_sum + j * dk + c0,
                       dv_sum == nullptr ? nullptr : dv_sum + j * dk + c0};
      for (int w = 0; w < 2; ++w) {
        const __m512 g = _mm512_castsi512_ps(gather16(src[w], 4 * kFlashKeyBlock, 0xffff));
        if (sum[w] != nullptr)
          _mm512_storeu_ps(sum[w], first ? g : _mm512_add_ps(_mm512_loadu_ps(sum[w]), g));
        else if constexpr (std::is_same_v<T, float>)
          _mm512_storeu_ps(out[w], g);
        else
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[w]), (__m256i)_mm512_cvtneps_pbh(g));
      }
    }
}

// One (b, h) backward on `gemm`; arguments as flash_backward_head. Key blocks outer; each key block's rows
// (j0 … j0 + block + W − 2) in query blocks of 64.
template <typename T, typename E>
static void flash_backward_head_tiled(TileGemm<E> gemm, T* dq, T* dk_out, T* dv_out, const T* q, const T* k, const T* v,
                                      const T* o, const T* dout, const float* lse, const AttentionShape& s, float slope,
                                      float* ws, float* dk_sum, float* dv_sum, bool first) {
  const int64_t t = s.seq, d = s.q_width(), dkv = s.kv_width(), dk = s.head_dim, tp = padded_rows(t);
  const int64_t kq = kFlashQueryBlock, kb = kFlashKeyBlock, g = kGroup<E>;
  constexpr bool f32 = std::is_same_v<E, float>;
  const float scale = flash_query_scale(s);
  auto* q_rows = reinterpret_cast<E*>(ws);                                    // T × d_k: scaled query rows
  E* q_t = q_rows + tp * dk;                                                  // d_k × T: their transpose
  E* do_rows = q_t + tp * dk;                                                 // T × d_k: dO rows
  E* do_t = do_rows + tp * dk;                                                // d_k × T
  auto* k_dim = reinterpret_cast<Group<E>*>(do_t + tp * dk);                  // d_k/G × 64: K along d_k
  Group<E>* v_dim = k_dim + dk / g * kb;                                      // d_k/G × 64: V along d_k
  Group<E>* k_keys = v_dim + dk / g * kb;                                     // 64/G × d_k: K along keys
  auto* p_groups = reinterpret_cast<Group<E>*>(k_keys + kb / g * dk);         // 64/G × 64 (bf16: P pairs)
  Group<E>* ds_groups = p_groups + (f32 ? 0 : kq / g * kb);                   // 64/G × 64 (bf16: dS pairs)
  auto* ds_rows = reinterpret_cast<E*>(ds_groups + (f32 ? 0 : kq / g * kb));  // 64 × 64 (bf16: dS rows)
  auto* dq_acc = reinterpret_cast<float*>(ds_rows + (f32 ? 0 : kq * kb));     // T (padded) × d_k
  float* delta = dq_acc + tp * dk;                                            // T
  float* dkt = delta + t;                                                     // d_k × 64
  float* dvt = dkt + dk * kb;                                                 // d_k × 64
  float* sc = dvt + dk * kb;                                                  // 64 × 64: scores, then p
  float* dp = sc + kq * kb;                                                   // 64 × 64: dP, then dS
  if constexpr (f32) p_groups = sc, ds_groups = dp, ds_rows = dp;             // float32 operands: the tiles themselves
  const TileScope tiles(is_amx(gemm));
  std::fill_n(dq_acc, tp * dk, 0.0f);
  for (int64_t i = 0; i < t; ++i) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < dk; ++c) sum += widen(dout[i * d + c]) * widen(o[i * d + c]);
    delta[i] = sum;
  }
  pack_rows_and_transpose(q_rows, q_t, q, t, tp, d, dk, scale);
  pack_rows_and_transpose(do_rows, do_t, dout, t, tp, d, dk, 1.0f);
  for (int64_t j0 = 0; j0 < t; j0 += kb) {
    const int64_t block = std::min(kb, t - j0);
    pack_along_dim<E>(k_dim, k + j0 * dkv, block, dkv, dk);
    pack_along_dim<E>(v_dim, v + j0 * dkv, block, dkv, dk);
    pack_along_rows<E>(k_keys, k + j0 * dkv, block, kb, dkv, dk);
    std::fill_n(dkt, 2 * dk * kb, 0.0f);  // dKᵀ and dVᵀ
    const int64_t row_end = std::min(t, j0 + block + s.span() - 1);
    for (int64_t i0 = j0; i0 < row_end; i0 += kq) {
      const int64_t rows = std::min(kq, row_end - i0);
      gemm(sc, kb, kq, kb, q_rows + i0 * dk, dk, k_dim, kb, dk / g, false);   // S = Q Kᵀ
      gemm(dp, kb, kq, kb, do_rows + i0 * dk, dk, v_dim, kb, dk / g, false);  // dP = dO Vᵀ
      for (int64_t r = 0; r < kq; ++r) {
        const int64_t i = i0 + r, lo = std::max(j0, s.first_key(i)), hi = std::min(j0 + block - 1, i);
        if (r >= rows || hi < lo) {
          std::fill_n(sc + r * kb, kb, 0.0f);
          std::fill_n(dp + r * kb, kb, 0.0f);
          continue;
        }
        if (slope != 0.0f) add_alibi(sc + r * kb + (lo - j0), slope, lo - i, hi - lo + 1);
        backward_row(sc + r * kb, dp + r * kb, lo - j0, hi - lo + 1, lse[i], delta[i], s);
      }
      if constexpr (!f32) pack_tile(p_groups, ds_rows, ds_groups, sc, dp);
      gemm(dq_acc + i0 * dk, dk, kq, dk, ds_rows, kb, k_keys, dk, kb / g, true);  // dQ += dS K
      gemm(dvt, kb, dk, kb, do_t + i0, tp, p_groups, kb, kq / g, true);           // dVᵀ += dOᵀ P
      gemm(dkt, kb, dk, kb, q_t + i0, tp, ds_groups, kb, kq / g, true);           // dKᵀ += Qᵀ dS
    }
    store_block_grads_tiled(dk_out + j0 * dkv, dv_out + j0 * dkv, dk_sum == nullptr ? nullptr : dk_sum + j0 * dk,
                            dv_sum == nullptr ? nullptr : dv_sum + j0 * dk, dkt, dvt, block, dkv, dk, first);
  }
  for (int64_t i = 0; i < t; ++i)
    for (int64_t c = 0; c < dk; ++c)
      dq[i * d + c] = narrow<T>(scale != 1.0f ? dq_acc[i * dk + c] * scale : dq_acc[i * dk + c]);
}

// One (b, h) in the path's kernels.
template <typename T>
static void flash_forward_head_on(FlashPath path, T* out, float* lse, const T* q, const T* k, const T* v,
                                  const AttentionShape& s, float slope, float* ws) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (path == FlashPath::amx) return flash_forward_head_tiled<T, uint16_t>(amx_gemm, out, lse, q, k, v, s, slope, ws);
    if (path == FlashPath::vdpbf16)
      return flash_forward_head_tiled<T, uint16_t>(vector_gemm<uint16_t>, out, lse, q, k, v, s, slope, ws);
  }
  if (path == FlashPath::f32_tiles)
    return flash_forward_head_tiled<T, float>(vector_gemm<float>, out, lse, q, k, v, s, slope, ws);
  flash_forward_head(out, lse, q, k, v, s, slope, ws);
}

template <typename T>
static void flash_backward_head_on(FlashPath path, T* dq, T* dk_out, T* dv_out, const T* q, const T* k, const T* v,
                                   const T* o, const T* dout, const float* lse, const AttentionShape& s, float slope,
                                   float* ws, float* dk_sum, float* dv_sum, bool first) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (path == FlashPath::amx)
      return flash_backward_head_tiled<T, uint16_t>(amx_gemm, dq, dk_out, dv_out, q, k, v, o, dout, lse, s, slope, ws,
                                                    dk_sum, dv_sum, first);
    if (path == FlashPath::vdpbf16)
      return flash_backward_head_tiled<T, uint16_t>(vector_gemm<uint16_t>, dq, dk_out, dv_out, q, k, v, o, dout, lse, s,
                                                    slope, ws, dk_sum, dv_sum, first);
  }
  if (path == FlashPath::f32_tiles)
    return flash_backward_head_tiled<T, float>(vector_gemm<float>, dq, dk_out, dv_out, q, k, v, o, dout, lse, s, slope,
                                               ws, dk_sum, dv_sum, first);
  flash_backward_head(dq, dk_out, dv_out, q, k, v, o, dout, lse, s, slope, ws, dk_sum, dv_sum, first);
}

Tensor flash_attention_forward(FlashAttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t num_heads, int64_t num_kv_heads, std::string_view name,
                               const AttentionScores& scores) {
  const AttentionShape sh = check_attention_inputs(q, k, v, num_heads, num_kv_heads, "flash attention", scores);
  const int64_t b = sh.batch, t = sh.seq, h = sh.heads, g = sh.group(), dk = sh.head_dim;
  const int64_t d = sh.q_width(), dkv = sh.kv_width();
  const std::string prefix(name);
  const int threads = omp_get_max_threads();
  const int64_t per_thread = flash_forward_workspace_floats(t, dk, q.dtype());
  const FlashPath path = flash_path(sh, q.dtype());
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
        flash_forward_head_on(path, po + base, pl + (bi * h + hi) * t, pq + base, pk + kv_base, pv + kv_base, sh,
                              sh.slope(hi), w);
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
  const int64_t per_thread = flash_backward_workspace_floats(t, dk, grad_q.dtype());
  const FlashPath path = flash_path(sh, grad_q.dtype());
  const int64_t parts = flash_backward_parts(sh, threads);
  const FlashAttentionBackwardTensors decl = flash_attention_backward_tensors(sh, grad_q.dtype(), threads);
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
            flash_backward_head_on(path, pdq + base, pdk + kv_base, pdv + kv_base, pq + base, pk + kv_base,
                                   pv + kv_base, po + base, pdo + base, pl + (bi * h + hi) * t, sh, sh.slope(hi), w,
                                   dk_sum, dv_sum, member == part);
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
