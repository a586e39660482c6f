#include "ops/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "runtime/check.h"
#include "runtime/checked.h"

namespace reckon {

OpCount embedding_forward_count(int64_t n, int64_t d, DType weight, bool scaled) {
  const CheckedInt N = n, D = d;
  OpCount c;
  c.other_flops = scaled ? (N * D).value() : 0;
  c.bytes_read = (4 * N + dtype_bytes(weight) * N * D).value();
  c.bytes_written = (4 * N * D).value();
  return c;
}

OpCount embedding_backward_count(int64_t n, int64_t d, DType grad_weight, bool scaled) {
  const CheckedInt s = dtype_bytes(grad_weight), N = n, D = d;
  OpCount c;
  c.other_flops = ((scaled ? 2 : 1) * N * D).value();
  c.bytes_read = (4 * (N + N * D) + s * N * D).value();
  c.bytes_written = (s * N * D).value();
  return c;
}

TensorDecl embedding_forward_tensor(int64_t b, int64_t t, int64_t d) {
  return {"", Category::activation, DType::f32, {b, t, d}, Lifetime::output};
}

static void check_tokens(const Tensor& tokens, int64_t vocab) {
  check_arg(tokens.dtype() == DType::i32 && tokens.dim() == 2 && tokens.is_contiguous(),
            "embedding: tokens must be a contiguous int32 (B, T) tensor, got '{}' {}", tokens.name(),
            tokens.shape_str());
  const int32_t* ids = tokens.data_i32();
  const int64_t t_len = tokens.size(1);
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    check_arg(ids[i] >= 0 && ids[i] < vocab,
              "embedding: token id at (b={}, t={}) is {}, allowed range is [0, {}] (vocab_size {})", i / t_len,
              i % t_len, ids[i], vocab - 1, vocab);
  }
}

Tensor embedding_forward(const Tensor& tokens, const Tensor& weight, std::string_view out_name, float scale) {
  check_arg(weight.dim() == 2 && weight.is_contiguous(), "embedding: weight '{}' must be a contiguous (V, D) tensor",
            weight.name());
  const int64_t vocab = weight.size(0), d = weight.size(1);
  check_tokens(tokens, vocab);
  const int64_t b = tokens.size(0), t = tokens.size(1), n = b * t;
  Tensor out = embedding_forward_tensor(b, t, d).allocate(out_name);
  OpRecord record("embedding");
  const int32_t* ids = tokens.data_i32();
  float* o = out.data();
  dispatch_floating(weight.dtype(), [&](auto tag) {
    using W = decltype(tag);
    const W* w = data_as<W>(weight);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const W* src = w + static_cast<int64_t>(ids[i]) * d;
      float* dst = o + i * d;
      if (scale != 1.0f) {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) dst[c] = widen(src[c]) * scale;
      } else if constexpr (std::is_same_v<W, float>) {
        std::memcpy(dst, src, static_cast<size_t>(d) * sizeof(float));
      } else {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) dst[c] = widen(src[c]);
      }
    }
  });
  record.count = embedding_forward_count(n, d, weight.dtype(), scale != 1.0f);
  return out;
}

void embedding_backward(const Tensor& grad_weight, const Tensor& grad_out, const Tensor& tokens, float scale) {
  const int64_t vocab = grad_weight.size(0), d = grad_weight.size(1);
  check_tokens(tokens, vocab);
  const int64_t n = tokens.numel();
  check_arg(grad_out.numel() == n * d && grad_out.is_contiguous(),
            "embedding backward: grad_out {} must hold N*D = {}*{} contiguous elements", grad_out.shape_str(), n, d);
  OpRecord record("embedding");
  const int32_t* ids = tokens.data_i32();
  const float* go = grad_out.data();
  dispatch_floating(grad_weight.dtype(), [&](auto tag) {
    using G = decltype(tag);
    G* gw = data_as<G>(grad_weight);
#pragma omp parallel
    {
      // Each thread owns the column range [c0, c1) of every row: race-free, and the order of additions
      // into any element (token order) is the same for every thread count.
      const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t chunk = (d + nthreads - 1) / nthreads;
      const int64_t c0 = std::min(d, tid * chunk), c1 = std::min(d, c0 + chunk);
      for (int64_t i = 0; i < n; ++i) {
        G* row = gw + static_cast<int64_t>(ids[i]) * d;
        const float* src = go + i * d;
        if (scale != 1.0f) {
          for (int64_t c = c0; c < c1; ++c) row[c] = narrow<G>(widen(row[c]) + src[c] * scale);
        } else {
          for (int64_t c = c0; c < c1; ++c) row[c] = narrow<G>(widen(row[c]) + src[c]);
        }
      }
    }
  });
  record.count = embedding_backward_count(n, d, grad_weight.dtype(), scale != 1.0f);
}

}  // namespace reckon

namespace reckon {

OpCount position_embedding_forward_count(int64_t b, int64_t t, int64_t d, DType weight) {
  const CheckedInt B = b, T = t, D = d;
  OpCount c;
  c.other_flops = (B * T * D).value();
  c.bytes_read = (4 * B * T * D + dtype_bytes(weight) * T * D).value();
  c.bytes_written = (4 * B * T * D).value();
  return c;
}

OpCount position_embedding_backward_count(int64_t b, int64_t t, int64_t d, DType grad_weight) {
  const CheckedInt s = dtype_bytes(grad_weight), B = b, T = t, D = d;
  OpCount c;
  c.other_flops = (B * T * D).value();
  c.bytes_read = (4 * B * T * D + s * T * D).value();
  c.bytes_written = (s * T * D).value();
  return c;
}

static void check_positions(const Tensor& x, const Tensor& pos) {
  check_arg(x.dim() == 3 && x.is_contiguous() && pos.dim() == 2 && pos.size(1) == x.size(2),
            "position embedding: x {} must be contiguous (B, T, D) and pos '{}' {} must be (T_max, D)", x.shape_str(),
            pos.name(), pos.shape_str());
  check_arg(x.size(1) <= pos.size(0), "position embedding: sequence length {} is outside the allowed range [1, {}]",
            x.size(1), pos.size(0));
}

void position_embedding_forward(const Tensor& x, const Tensor& pos_weight) {
  check_positions(x, pos_weight);
  OpRecord record("position_embedding");
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  float* px = x.data();
  dispatch_floating(pos_weight.dtype(), [&](auto tag) {
    using W = decltype(tag);
    const W* pp = data_as<W>(pos_weight);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < t; ++j) {
        float* row = px + (i * t + j) * d;
        const W* prow = pp + j * d;
        for (int64_t c = 0; c < d; ++c) row[c] += widen(prow[c]);
      }
  });
  record.count = position_embedding_forward_count(b, t, d, pos_weight.dtype());
}

void position_embedding_backward(const Tensor& grad_pos, const Tensor& grad_x) {
  check_positions(grad_x, grad_pos);
  OpRecord record("position_embedding");
  const int64_t b = grad_x.size(0), t = grad_x.size(1), d = grad_x.size(2);
  const float* gx = grad_x.data();
  dispatch_floating(grad_pos.dtype(), [&](auto tag) {
    using G = decltype(tag);
    G* gp = data_as<G>(grad_pos);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < t; ++j) {
      G* prow = gp + j * d;
      for (int64_t i = 0; i < b; ++i) {
        const float* row = gx + (i * t + j) * d;
        for (int64_t c = 0; c < d; ++c) prow[c] = narrow<G>(widen(prow[c]) + row[c]);
      }
    }
  });
  record.count = position_embedding_backward_count(b, t, d, grad_pos.dtype());
}

}  // namespace reckon
