// Float64 reference implementations and gradient-check helpers shared by the test suites. Written plainly,
// independently of ops/: a loop per formula, no shared code with the kernels under test.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ops/ffn.h"
#include "runtime/tensor.h"

namespace reckon::testing_ref {

using Vec = std::vector<double>;

// Expects `fn` to throw std::invalid_argument whose message contains every piece of `needles`.
template <typename Fn>
void expect_invalid(Fn fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

inline Vec random_vec(int64_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = static_cast<float>(dist(rng));  // representable in float32 exactly
  return v;
}

inline Tensor tensor_from(const Vec& v, const Shape& shape, Category cat, const std::string& name) {
  Tensor t = Tensor::empty(shape, cat, name);
  for (size_t i = 0; i < v.size(); ++i) t.data()[i] = static_cast<float>(v[i]);
  return t;
}

inline Vec vec_from(const Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = t.data()[i];
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max |a − b| / max |b|
inline double rel_err(const Vec& a, const Vec& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

// Central differences of f at x, every element.
inline Vec fd_grad(const std::function<double(const Vec&)>& f, Vec x) {
  constexpr double h = 1e-6;
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline Vec linear_ref(const Vec& x, const Vec& w, int64_t n, int64_t in, int64_t out) {
  Vec y(static_cast<size_t>(n * out), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < in; ++k) y[i * out + o] += x[i * in + k] * w[o * in + k];
  return y;
}

// nn.LayerNorm in float64: (x − μ)/sqrt(var + eps)·g (+ b), var the biased variance; b empty = no bias.
inline Vec layernorm_ref(const Vec& x, const Vec& g, const Vec& b, int64_t n, int64_t d, double eps) {
  Vec y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mu += x[i * d + j] / static_cast<double>(d);
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mu) * (x[i * d + j] - mu) / static_cast<double>(d);
    const double r = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = (x[i * d + j] - mu) * r * g[j] + (b.empty() ? 0.0 : b[j]);
  }
  return y;
}

inline Vec rmsnorm_ref(const Vec& x, const Vec& g, int64_t n, int64_t d, double eps) {
  Vec y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[i * d + j] * x[i * d + j];
    const double r = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = x[i * d + j] * r * g[j];
  }
  return y;
}

// Causal attention in float64: q (B, T, d = H·d_k), k and v (B, T, KV·d_k) with kv_heads KV (0: = h); query head
// hh reads K/V head hh / (H / KV), as Hugging Face's repeat_kv. window W > 0: query i sees keys j with i − j < W;
// softcap c > 0: each score s becomes c·tanh(s / c) (Hugging Face's Gemma-2 eager attention); alibi_bias_max > 0:
// score (i, j) of head hh gains slope·(j − i) (alibi_slopes_ref).
// ALiBi's slopes as BLOOM writes them (Hugging Face's build_alibi_tensor), in float64: with p the power of two at
// or below H, base 2^(−8/p) raised to 1 … p; the remaining H − p heads take 2^(−4/p) to the odd powers 1, 3, ….
// bias_max ≠ 8 generalises the 8 (MPT's alibi_bias_max).
inline Vec alibi_slopes_ref(int64_t h, double bias_max) {
  int64_t p = 1;
  while (2 * p <= h) p *= 2;
  Vec slopes;
  for (int64_t e = 1; e <= p; ++e) slopes.push_back(std::pow(std::pow(2.0, -bias_max / p), e));
  for (int64_t e = 1; static_cast<int64_t>(slopes.size()) < h; e += 2)
    slopes.push_back(std::pow(std::pow(2.0, -bias_max / (2 * p)), e));
  return slopes;
}
inline Vec attention_ref(const Vec& q, const Vec& k, const Vec& v, int64_t b, int64_t t, int64_t d, int64_t h,
                         int64_t kv_heads = 0, int64_t window = 0, double softcap = 0, double alibi_bias_max = 0) {
  const int64_t dk = d / h, kvh = kv_heads > 0 ? kv_heads : h, dkv = kvh * dk, group = h / kvh;
  const Vec slopes = alibi_bias_max > 0 ? alibi_slopes_ref(h, alibi_bias_max) : Vec(static_cast<size_t>(h), 0.0);
  Vec ctx(static_cast<size_t>(b * t * d), 0.0);
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < t; ++i) {
        const int64_t kc = (hh / group) * dk;  // the K/V head's first column
        Vec s(static_cast<size_t>(i + 1));
        double m = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          if (window > 0 && i - j >= window) continue;
          double acc = 0;
          for (int64_t c = 0; c < dk; ++c) acc += q[(bb * t + i) * d + hh * dk + c] * k[(bb * t + j) * dkv + kc + c];
          s[j] = acc / std::sqrt(static_cast<double>(dk));
          if (softcap > 0) s[j] = softcap * std::tanh(s[j] / softcap);
          s[j] += slopes[static_cast<size_t>(hh)] * static_cast<double>(j - i);
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) {
          s[j] = window > 0 && i - j >= window ? 0.0 : std::exp(s[j] - m);
          z += s[j];
        }
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t c = 0; c < dk; ++c)
            ctx[(bb * t + i) * d + hh * dk + c] += s[j] / z * v[(bb * t + j) * dkv + kc + c];
      }
  return ctx;
}

// RoPE in float64 (Hugging Face's rotate_half layout): x (B·T rows of heads·d_k), position = row % t; sign −1
// rotates by the opposite angle.
inline Vec rope_ref(const Vec& x, int64_t rows, int64_t t, int64_t heads, int64_t dk, double theta, double sign = 1) {
  Vec out = x;
  const int64_t half = dk / 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(r % t) * std::pow(theta, -2.0 * static_cast<double>(i) / dk);
        const double c = std::cos(angle), s = sign * std::sin(angle);
        const size_t a = static_cast<size_t>(r * heads * dk + h * dk + i), b = a + static_cast<size_t>(half);
        out[a] = x[a] * c - x[b] * s;
        out[b] = x[b] * c + x[a] * s;
      }
  return out;
}

inline double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }
// GELU exact (x·Φ(x)) and its tanh form, as PyTorch's nn.GELU() and nn.GELU(approximate="tanh") define them.
inline double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
inline double gelu_tanh_ref(double x) {
  const double pi = std::acos(-1.0);
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}
inline double activation_ref(Activation a, double x) {
  return a == Activation::silu ? silu_ref(x) : a == Activation::gelu ? gelu_ref(x) : gelu_tanh_ref(x);
}

// y += b per row (b empty: no bias).
inline void add_bias_ref(Vec& y, const Vec& b) {
  if (b.empty()) return;
  for (size_t i = 0; i < y.size(); ++i) y[i] += b[i % b.size()];
}

// The FFN of ops/ffn.h in float64; b1, b3, b2 empty = no biases (w3, b3 read only for gated kinds).
inline Vec ffn_ref(const Vec& hx, const Vec& w1, const Vec& w3, const Vec& w2, int64_t n, int64_t d, int64_t f,
                   FfnKind kind, const Vec& b1 = {}, const Vec& b3 = {}, const Vec& b2 = {}) {
  Vec a = linear_ref(hx, w1, n, d, f);
  add_bias_ref(a, b1);
  Vec act(a.size());
  const bool gated = kind == FfnKind::swiglu || kind == FfnKind::geglu || kind == FfnKind::geglu_tanh;
  const Activation fn = kind == FfnKind::swiglu || kind == FfnKind::silu_mlp  ? Activation::silu
                        : kind == FfnKind::geglu || kind == FfnKind::gelu_mlp ? Activation::gelu
                                                                              : Activation::gelu_tanh;
  if (gated) {
    Vec bb = linear_ref(hx, w3, n, d, f);
    add_bias_ref(bb, b3);
    for (size_t i = 0; i < a.size(); ++i) act[i] = activation_ref(fn, a[i]) * bb[i];
  } else {
    for (size_t i = 0; i < a.size(); ++i) act[i] = activation_ref(fn, a[i]);
  }
  Vec y = linear_ref(act, w2, n, f, d);
  add_bias_ref(y, b2);
  return y;
}

// Mean cross-entropy in float64; softcap c > 0: over c·tanh(z / c) (Gemma-2's final_logit_softcapping).
inline double cross_entropy_ref(const Vec& logits, const std::vector<int32_t>& tgt, int64_t n, int64_t v,
                                double softcap = 0) {
  Vec z = logits;
  if (softcap > 0)
    for (double& x : z) x = softcap * std::tanh(x / softcap);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    double m = -1e300;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, z[i * v + j]);
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(z[i * v + j] - m);
    total += m + std::log(s) - z[i * v + tgt[static_cast<size_t>(i)]];
  }
  return total / static_cast<double>(n);
}

inline Tensor int_tensor(const std::vector<int32_t>& v, const Shape& shape, const std::string& name) {
  Tensor t = Tensor::empty(shape, Category::activation, name, DType::i32);
  for (size_t i = 0; i < v.size(); ++i) t.data_i32()[i] = v[i];
  return t;
}

inline std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = dist(rng);
  return ids;
}

}  // namespace reckon::testing_ref
