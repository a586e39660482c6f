// exp for float in plain arithmetic, so `#pragma omp simd` loops vectorise it (libm's expf is a call the
// compiler cannot vectorise without -ffast-math, which we do not use). Cephes' expf: Cody–Waite range
// reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r, and 2^n assembled in the exponent
// bits. Relative error ≤ 2 ulp on [-87.3, 88.7]; below that the result is the smallest normal (≈ 1.2e-38),
// above it +inf is avoided (clamped). FLOP convention: still counts 1 (docs/conventions.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <bit>

namespace reckon {

#pragma omp declare simd
inline float exp_simd(float x) {
  x = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;  // ln2 split in two so n·ln2_hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  // 2^n from the exponent bits (bit_cast, not memcpy: the vectoriser handles it).
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return er * scale;
}

}  // namespace reckon
