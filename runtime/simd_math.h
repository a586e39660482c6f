// exp for float in plain arithmetic, so `#pragma omp simd` loops vectorise it (libm's expf is a call the
// compiler cannot vectorise without -ffast-math, which we do not use). Cephes' expf: Cody–Waite range
// reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r, and 2^n assembled in the exponent
// bits. Relative error < 3·FLT_EPSILON on [-87, 88] (tested); below that the result is the smallest normal
// (≈ 1.2e-38), above it e^88.376 ≈ 2.4e38 (clamped: never +inf). FLOP convention: still counts 1 (docs/conventions.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <bit>
#include <cstring>

#include "runtime/bf16.h"

namespace reckon {

#pragma omp declare simd
inline float exp_simd(float x) {
  // Above 127.5·ln 2 the rounded n would be 128, whose 2^n is not a float: clamp just below.
  x = x < -87.33654f ? -87.33654f : (x > 88.37626f ? 88.37626f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;  // ln2 split in two so n·ln2_hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float er = std::fma(p * r, r, r + 1.0f);
  // 2^n from the exponent bits (bit_cast, not memcpy: the vectoriser handles it).
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return er * scale;
}

// tanh for float in plain arithmetic, vectorisable (Cephes' tanhf): |x| < 0.625 an odd degree-11 polynomial,
// else 1 − 2 / (e^{2|x|} + 1) with x's sign (exp_simd's clamp makes it exactly ±1 beyond |x| ≈ 44). Relative error
// < 3·FLT_EPSILON (tested against std::tanh). FLOP convention: counts 1, as exp.
#pragma omp declare simd
inline float tanh_simd(float x) {
  const float a = std::fabs(x), z = x * x;
  float p = -5.70498872745e-3f;
  p = std::fma(p, z, 2.06390887954e-2f);
  p = std::fma(p, z, -5.37397155531e-2f);
  p = std::fma(p, z, 1.33314422036e-1f);
  p = std::fma(p, z, -3.33332819422e-1f);
  const float small = std::fma(p * z, x, x);
  const float big = 1.0f - 2.0f / (exp_simd(2.0f * a) + 1.0f);
  return a < 0.625f ? small : std::copysign(big, x);
}

// The largest of x[0..n), n ≥ 1 (a NaN element is skipped). `#pragma omp simd reduction(max : m)` over
// std::max does not vectorise without -ffinite-math-only (GCC 12 emits one scalar vmaxss chain: 4.4 ms for
// cross-entropy's 2048 × 8192 logits); one 16-lane vector of running maxima is a vmaxps per 16 floats (1.5 ms).
// bf16 values are widened exactly (a zero-extend and a shift per 16), as float.
namespace simd_detail {
using Lanes = float __attribute__((vector_size(64)));
inline Lanes load16(const float* x) {
  Lanes y;
  std::memcpy(&y, x, sizeof y);
  return y;
}
inline Lanes load16(const bf16* x) {
  using Half = uint16_t __attribute__((vector_size(32)));
  using Word = uint32_t __attribute__((vector_size(64)));
  Half h;
  std::memcpy(&h, x, sizeof h);
  const Word w = __builtin_convertvector(h, Word) << 16;
  return std::bit_cast<Lanes>(w);
}
}  // namespace simd_detail

template <typename T>
inline float max_of(const T* x, int64_t n) {
  using simd_detail::Lanes;
  float m = widen(x[0]);
  int64_t j = 0;
  if (n >= 16) {
    Lanes acc = simd_detail::load16(x);
    for (j = 16; j + 16 <= n; j += 16) {
      const Lanes y = simd_detail::load16(x + j);
      acc = y > acc ? y : acc;
    }
    m = acc[0];
    for (int l = 1; l < 16; ++l) m = acc[l] > m ? acc[l] : m;
  }
  for (; j < n; ++j) m = widen(x[j]) > m ? widen(x[j]) : m;
  return m;
}

}  // namespace reckon
