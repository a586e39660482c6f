#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "runtime/check.h"
#include "runtime/matmul.h"
#include "runtime/simd_math.h"
#include "runtime/checked.h"

namespace reckon {

float alibi_slope(int64_t head, int64_t heads, float bias_max) {
  int64_t p = 1;
  while (p < heads) p *= 2;
  // The k (1 … P) of head `head`: in order when P = heads; else the even k first (2, 4, …, P), then the odd ones.
  const int64_t k = p == heads ? head + 1 : head < p / 2 ? 2 * (head + 1) : 2 * (head - p / 2) + 1;
  return static_cast<float>(
      std::exp2(-static_cast<double>(bias_max) * static_cast<double>(k) / static_cast<double>(p)));
}

OpCount attention_softmax_forward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt bh = CheckedInt(sh.batch) * sh.heads, T = sh.seq, visible = sh.visible(), s = dtype_bytes(dtype);
  const CheckedInt capped = sh.capped() ? 1 : 0, alibi = sh.alibi() ? 1 : 0;
  OpCount c;
  c.other_flops = (bh * (5 + 3 * capped + 4 * alibi) * visible).value();
  c.bytes_read = (s * bh * visible).value();
  c.bytes_written = (s * bh * (1 + capped) * T * T).value();
  return c;
}

OpCount attention_softmax_backward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt bh = CheckedInt(sh.batch) * sh.heads, T = sh.seq, visible = sh.visible(), s = dtype_bytes(dtype);
  const CheckedInt capped = sh.capped() ? 1 : 0;
  OpCount c;
  c.other_flops = (bh * (4 + 3 * capped) * visible).value();
  c.bytes_read = (s * bh * (2 + capped) * visible).value();
  c.bytes_written = (s * bh * T * T).value();
  return c;
}

OpCount attention_forward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt s = dtype_bytes(dtype), t = sh.seq, dk = sh.head_dim, bh = CheckedInt(sh.batch) * sh.heads;
  const CheckedInt scaled = sh.head_dim == 1 ? 0 : 1;  // 1/√1 = 1: nothing runs
  // Per query head: QKᵀ reads its Q and its group's K, writes scores; PV reads P and the group's V, writes ctx.
  OpCount c = attention_softmax_forward_count(sh, dtype);
  c.matmul_flops = (bh * 4 * t * t * dk).value();
  c.other_flops = (bh * scaled * t * t + c.other_flops).value();
  c.bytes_read = (s * bh * (2 * t * dk + t * t + t * dk) + c.bytes_read).value();
  c.bytes_written = (s * bh * (t * t + t * dk) + c.bytes_written).value();
  return c;
}

OpCount attention_backward_count(const AttentionShape& sh, DType dtype) {
  const CheckedInt s = dtype_bytes(dtype), t = sh.seq, dk = sh.head_dim, bh = CheckedInt(sh.batch) * sh.heads;
  const CheckedInt scaled = sh.head_dim == 1 ? 0 : 1;
  const CheckedInt shared = bh - CheckedInt(sh.batch) * sh.kv_heads;  // heads accumulating into their group's dK, dV
  // dP = dC Vᵀ; dV (+)= Pᵀ dC; the softmax backward; dQ = dS K; dK (+)= dSᵀ Q — an accumulating call also reads
  // its destination.
  OpCount c = attention_softmax_backward_count(sh, dtype);
  c.matmul_flops = (bh * 8 * t * t * dk).value();
  c.other_flops = (bh * scaled * 2 * t * dk + shared * 2 * t * dk + c.other_flops).value();
  c.bytes_read =
      (s * (bh * (2 * t * dk + (t * t + t * dk) + 2 * (t * t + t * dk)) + shared * 2 * t * dk) + c.bytes_read).value();
  c.bytes_written = (s * bh * (t * t + 3 * t * dk) + c.bytes_written).value();
  return c;
}

AttentionTensors attention_forward_tensors(const AttentionShape& s, DType dtype) {
  AttentionTensors out{{".probs", Category::activation, dtype, {s.batch, s.heads, s.seq, s.seq}, Lifetime::saved},
                       std::nullopt,
                       {".ctx", Category::activation, dtype, {s.batch, s.seq, s.q_width()}, Lifetime::output}};
  if (s.capped())
    out.tanh = TensorDecl{".tanh", Category::activation, dtype, {s.batch, s.heads, s.seq, s.seq}, Lifetime::saved};
  return out;
}

TensorDecl attention_backward_tensor(const AttentionShape& s, DType dtype) {
  return {".grad_probs", Category::temporary, dtype, {s.batch, s.heads, s.seq, s.seq}, Lifetime::temporary};
}

AttentionShape check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                                      int64_t num_kv_heads, std::string_view op, const AttentionScores& scores) {
  check_arg(q.dim() == 3 && q.is_contiguous(), "{}: q '{}' must be a contiguous (B, T, H·head_dim) tensor, got {}", op,
            q.name(), q.shape_str());
  check_arg(k.dim() == 3 && k.shape() == v.shape() && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                k.is_contiguous() && v.is_contiguous() && k.dtype() == q.dtype() && v.dtype() == q.dtype(),
            "{}: q {}, k {}, v {} must be contiguous (B, T, width) tensors of one dtype, k and v of one shape", op,
            q.shape_str(), k.shape_str(), v.shape_str());
  const int64_t qw = q.size(2);
  check_arg(num_heads >= 1 && num_heads <= qw, "{}: num_heads is {}, allowed range is [1, {}] (q's width)", op,
            num_heads, qw);
  check_arg(qw % num_heads == 0, "{}: q's width {} is not divisible by num_heads {}", op, qw, num_heads);
  check_arg(num_kv_heads >= 1 && num_kv_heads <= num_heads && num_heads % num_kv_heads == 0,
            "{}: num_kv_heads is {}, allowed: a divisor of num_heads {}", op, num_kv_heads, num_heads);
  check_arg(scores.window >= 0, "{}: sliding window is {}, allowed: 0 (none) or at least 1", op, scores.window);
  check_arg(std::isfinite(scores.softcap) && scores.softcap >= 0.0f,
            "{}: soft-capping is {}, allowed: 0 (none) or a finite value > 0", op, scores.softcap);
  check_arg(std::isfinite(scores.alibi_bias_max) && scores.alibi_bias_max >= 0.0f,
            "{}: alibi_bias_max is {}, allowed: 0 (no ALiBi) or a finite value > 0", op, scores.alibi_bias_max);
  check_arg(scores.softcap == 0.0f || scores.alibi_bias_max == 0.0f,
            "{}: soft-capping ({}) and ALiBi (alibi_bias_max {}) together are not supported: one or the other", op,
            scores.softcap, scores.alibi_bias_max);
  const AttentionShape s{q.size(0),      q.size(1),     num_heads,      num_kv_heads,
                         qw / num_heads, scores.window, scores.softcap, scores.alibi_bias_max};
  check_arg(k.size(2) == s.kv_width(), "{}: k and v have width {}, expected num_kv_heads × head_dim = {} × {}", op,
            k.size(2), num_kv_heads, s.head_dim);
  return s;
}

namespace {

// A 4-d strided view of one of the core's buffers (runtime/tensor.h as_strided), as a value: the kernel makes
// tensors of it, attention_*_matmuls geometries.
struct View {
  std::array<int64_t, 4> dims, strides;
  int64_t offset = 0;
  View t() const {  // the last two dims swapped (a transpose by strides)
    View v = *this;
    std::swap(v.dims[2], v.dims[3]);
    std::swap(v.strides[2], v.strides[3]);
    return v;
  }
  Tensor of(const Tensor& x) const {
    return x.as_strided(Shape(dims.begin(), dims.end()), Shape(strides.begin(), strides.end()), offset);
  }
};

// Member j of every group of query heads in a (B, T, H·d_k) buffer (q, ctx, their gradients): {B, KV, T, d_k}.
View query_heads(const AttentionShape& s, int64_t j) {
  const int64_t w = s.q_width();
  return {{s.batch, s.kv_heads, s.seq, s.head_dim}, {s.seq * w, s.group() * s.head_dim, w, 1}, j * s.head_dim};
}
// The K/V heads of a (B, T, KV·d_k) buffer: {B, KV, T, d_k}.
View kv_heads(const AttentionShape& s) {
  const int64_t w = s.kv_width();
  return {{s.batch, s.kv_heads, s.seq, s.head_dim}, {s.seq * w, s.head_dim, w, 1}, 0};
}
// Member j's T×T blocks of a (B, H, T, T) buffer (probs, grad_probs): {B, KV, T, T}.
View score_heads(const AttentionShape& s, int64_t j) {
  const int64_t tt = s.seq * s.seq;
  return {{s.batch, s.kv_heads, s.seq, s.seq}, {s.heads * tt, s.group() * tt, s.seq, 1}, j * tt};
}

MatmulGeometry geometry_of(const View& dst, const View& a, const View& b, float alpha, bool accumulate, DType dtype) {
  MatmulGeometry g;
  g.rank = 4;
  g.alpha = alpha;
  g.accumulate = accumulate;
  g.a_dtype = g.b_dtype = g.dst_dtype = dtype;
  for (int d = 0; d < 4; ++d) {
    g.a_dims[d] = a.dims[d], g.a_strides[d] = a.strides[d];
    g.b_dims[d] = b.dims[d], g.b_strides[d] = b.strides[d];
    g.dst_dims[d] = dst.dims[d], g.dst_strides[d] = dst.strides[d];
  }
  return g;
}

float score_scale(const AttentionShape& s) { return 1.0f / std::sqrt(static_cast<float>(s.head_dim)); }

}  // namespace

AttentionForwardMatmuls attention_forward_matmuls(const AttentionShape& s, DType dtype) {
  AttentionForwardMatmuls m;
  for (int64_t j = 0; j < s.group(); ++j) {
    m.scores.push_back(
        geometry_of(score_heads(s, j), query_heads(s, j), kv_heads(s).t(), score_scale(s), false, dtype));
    m.context.push_back(geometry_of(query_heads(s, j), score_heads(s, j), kv_heads(s), 1.0f, false, dtype));
  }
  return m;
}

AttentionBackwardMatmuls attention_backward_matmuls(const AttentionShape& s, DType dtype) {
  AttentionBackwardMatmuls m;
  const float scale = score_scale(s);
  for (int64_t j = 0; j < s.group(); ++j) {
    const View q = query_heads(s, j), kv = kv_heads(s), p = score_heads(s, j);
    m.grad_probs.push_back(geometry_of(p, q, kv.t(), 1.0f, false, dtype));
    m.grad_v.push_back(geometry_of(kv, p.t(), q, 1.0f, j > 0, dtype));
    m.grad_q.push_back(geometry_of(q, p, kv, scale, false, dtype));
    m.grad_k.push_back(geometry_of(kv, p.t(), q, scale, j > 0, dtype));
  }
  return m;
}

// In place over each (b, h) T×T block: row i becomes softmax(row[first_key(i) .. i]), zeros elsewhere; capped, each
// visible score x first becomes c·tanh(x / c), tanh(x / c) kept in `tanh_out` (zeros elsewhere); with ALiBi, x + m_h·(j
// − i) (in float32: a bf16 score is widened, then biased, as autocast's bf16 scores plus MPT's float32 bias). T = float
// or bf16: arithmetic in float32; a bf16 row holds exp(x − max) rounded, then the normalised value rounded again.
template <typename T>
static void softmax_forward(T* p, T* tanh_out, const AttentionShape& s) {
  const int64_t bh = s.batch * s.heads, t = s.seq;
  const float cap = s.softcap, inv_cap = s.capped() ? 1.0f / s.softcap : 0.0f;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t blk = 0; blk < bh; ++blk) {
    for (int64_t i = 0; i < t; ++i) {
      T* row = p + (blk * t + i) * t;
      const int64_t lo = s.first_key(i), n = i + 1 - lo;
      const float slope = s.slope(blk % s.heads);
      if (tanh_out != nullptr) {
        T* th = tanh_out + (blk * t + i) * t;
#pragma omp simd
        for (int64_t j = lo; j <= i; ++j) {
          const float u = tanh_simd(widen(row[j]) * inv_cap);
          th[j] = narrow<T>(u);
          row[j] = narrow<T>(cap * u);
        }
        for (int64_t j = 0; j < lo; ++j) th[j] = narrow<T>(0.0f);
        for (int64_t j = i + 1; j < t; ++j) th[j] = narrow<T>(0.0f);
      }
      T* visible = row + lo;
      float sum = 0.0f;
      if (slope != 0.0f) {  // ALiBi: score + m·(j − i), j = lo + u, computed in the max pass and again in the exp pass
        const int64_t first = lo - i;  // j − i of the first visible key: an integer, converted (not a FLOP)
        float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
        for (int64_t u = 0; u < n; ++u) m = std::max(m, widen(visible[u]) + slope * static_cast<float>(first + u));
#pragma omp simd reduction(+ : sum)
        for (int64_t u = 0; u < n; ++u) {
          const float e = exp_simd(widen(visible[u]) + slope * static_cast<float>(first + u) - m);
          visible[u] = narrow<T>(e);
          sum += e;
        }
      } else {
        const float m = max_of(visible, n);
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; ++j) {
          const float e = exp_simd(widen(visible[j]) - m);
          visible[j] = narrow<T>(e);
          sum += e;
        }
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) visible[j] = narrow<T>(widen(visible[j]) * inv);
      for (int64_t j = 0; j < lo; ++j) row[j] = narrow<T>(0.0f);
      for (int64_t j = i + 1; j < t; ++j) row[j] = narrow<T>(0.0f);
    }
  }
}

// In place: dp becomes dS = P ⊙ (dP − Σ_j P_j dP_j) on the visible part (capped: times 1 − tanh²), zeros elsewhere.
template <typename T>
static void softmax_backward(T* dp, const T* p, const T* tanh_in, const AttentionShape& s) {
  const int64_t bh = s.batch * s.heads, t = s.seq;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t blk = 0; blk < bh; ++blk) {
    for (int64_t i = 0; i < t; ++i) {
      T* drow = dp + (blk * t + i) * t;
      const T* prow = p + (blk * t + i) * t;
      const int64_t lo = s.first_key(i);
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = lo; j <= i; ++j) dot += widen(prow[j]) * widen(drow[j]);
      if (tanh_in != nullptr) {
        const T* th = tanh_in + (blk * t + i) * t;
#pragma omp simd
        for (int64_t j = lo; j <= i; ++j) {
          const float u = widen(th[j]);
          drow[j] = narrow<T>(widen(prow[j]) * (widen(drow[j]) - dot) * (1.0f - u * u));
        }
      } else {
#pragma omp simd
        for (int64_t j = lo; j <= i; ++j) drow[j] = narrow<T>(widen(prow[j]) * (widen(drow[j]) - dot));
      }
      for (int64_t j = 0; j < lo; ++j) drow[j] = narrow<T>(0.0f);
      for (int64_t j = i + 1; j < t; ++j) drow[j] = narrow<T>(0.0f);
    }
  }
}

Tensor attention_forward(AttentionSaved& saved, const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                         int64_t num_kv_heads, std::string_view name, const AttentionScores& scores) {
  const AttentionShape sh = check_attention_inputs(q, k, v, num_heads, num_kv_heads, "attention", scores);
  const DType dtype = q.dtype();
  const std::string prefix(name);
  const AttentionTensors decl = attention_forward_tensors(sh, dtype);
  Tensor probs = decl.probs.allocate(prefix);
  Tensor tanh = decl.tanh ? decl.tanh->allocate(prefix) : Tensor();
  Tensor ctx = decl.ctx.allocate(prefix);
  for (int64_t j = 0; j < sh.group(); ++j) {  // scores = Q Kᵀ / sqrt(d_k), one call per group member
    matmul(score_heads(sh, j).of(probs), query_heads(sh, j).of(q), kv_heads(sh).t().of(k), "attention",
           score_scale(sh));
  }
  {
    OpRecord record("attention");
    dispatch_floating(dtype, [&](auto tag) {
      using T = decltype(tag);
      softmax_forward(data_as<T>(probs), tanh.defined() ? data_as<T>(tanh) : nullptr, sh);
    });
    record.count = attention_softmax_forward_count(sh, dtype);
  }
  for (int64_t j = 0; j < sh.group(); ++j) {  // ctx = P V
    matmul(query_heads(sh, j).of(ctx), score_heads(sh, j).of(probs), kv_heads(sh).of(v), "attention");
  }
  saved.q = q;
  saved.k = k;
  saved.v = v;
  saved.probs = probs;
  saved.tanh = tanh;
  saved.shape = sh;
  saved.name = prefix;
  return ctx;
}

void attention_backward(const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v, const Tensor& grad_ctx,
                        AttentionSaved& saved) {
  check_arg(saved.probs.defined(), "attention backward: nothing saved (forward not run, or backward run twice)");
  const AttentionShape sh = saved.shape;
  check_attention_inputs(grad_q, grad_k, grad_v, sh.heads, sh.kv_heads, "attention backward");
  check_arg(grad_q.shape() == saved.q.shape() && grad_k.shape() == saved.k.shape() &&
                grad_ctx.shape() == saved.q.shape() && grad_ctx.is_contiguous(),
            "attention backward: gradients must have the shapes of q {} and k {}", saved.q.shape_str(),
            saved.k.shape_str());
  const float scale = score_scale(sh);
  const int64_t g = sh.group();
  const DType dtype = saved.probs.dtype();
  Tensor grad_probs = attention_backward_tensor(sh, dtype).allocate(saved.name);
  const View kv = kv_heads(sh);
  for (int64_t j = 0; j < g; ++j) {  // dP = dC Vᵀ
    matmul(score_heads(sh, j).of(grad_probs), query_heads(sh, j).of(grad_ctx), kv.t().of(saved.v), "attention");
  }
  for (int64_t j = 0; j < g; ++j) {  // dV = Σ_j P_jᵀ dC_j over the group
    matmul(kv.of(grad_v), score_heads(sh, j).t().of(saved.probs), query_heads(sh, j).of(grad_ctx), "attention", 1.0f,
           j > 0);
  }
  {
    OpRecord record("attention");
    dispatch_floating(dtype, [&](auto tag) {
      using T = decltype(tag);
      softmax_backward(data_as<T>(grad_probs), data_as<T>(saved.probs),
                       saved.tanh.defined() ? data_as<T>(saved.tanh) : nullptr, sh);
    });
    record.count = attention_softmax_backward_count(sh, dtype);
  }
  saved.probs.reset();
  saved.tanh.reset();
  saved.v.reset();
  for (int64_t j = 0; j < g; ++j) {  // dQ = dS K / sqrt(d_k)
    matmul(query_heads(sh, j).of(grad_q), score_heads(sh, j).of(grad_probs), kv.of(saved.k), "attention", scale);
  }
  saved.k.reset();
  for (int64_t j = 0; j < g; ++j) {  // dK = Σ_j dS_jᵀ Q_j / sqrt(d_k) over the group
    matmul(kv.of(grad_k), score_heads(sh, j).t().of(grad_probs), query_heads(sh, j).of(saved.q), "attention", scale,
           j > 0);
  }
  saved.q.reset();
}

}  // namespace reckon
