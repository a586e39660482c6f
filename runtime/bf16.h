// bfloat16: the top 16 bits of a float32 (8-bit exponent, 7-bit mantissa). f32 → bf16 rounds to nearest even,
// bit-identical to oneDNN's reorder and to AVX512-BF16's VCVTNEPS2BF16: NaN stays NaN (quietened, sign kept),
// ±inf stays, and float32 denormals become a zero of the same sign (the instruction treats denormal inputs as
// zero; oneDNN's reference converter does the same). bf16 → f32 is exact (a shift).
#pragma once

#include <cstdint>
#include <cstring>

namespace reckon {

struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2);

// Reference conversions (one element), the definition the vector kernels are tested against. Written with
// selects, not branches, so loops that call it (the master-weights AdamW) vectorise.
inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t magnitude = u & 0x7fffffffu;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest, ties to even (→ inf past max)
  const uint32_t quiet_nan = (u >> 16) | 0x40u, signed_zero = (u >> 16) & 0x8000u;
  return bf16{static_cast<uint16_t>(magnitude > 0x7f800000u   ? quiet_nan
                                    : magnitude < 0x00800000u ? signed_zero  // zero and denormals
                                                              : rounded)};
}

inline float to_float(bf16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Element access for kernels templated on their storage type (float or bf16): widen exactly on load, round to
// nearest even on store. Arithmetic always runs in float32.
inline float widen(float x) { return x; }
inline float widen(bf16 x) { return to_float(x); }
template <typename T>
inline T narrow(float x);
template <>
inline float narrow<float>(float x) {
  return x;
}
template <>
inline bf16 narrow<bf16>(float x) {
  return to_bf16(x);
}

// n elements, vectorised (VCVTNEPS2BF16 where the CPU has AVX512-BF16, an AVX-512F emulation otherwise,
// scalar without AVX-512); same bits as to_bf16 element by element.
void convert_to_bf16(bf16* dst, const float* src, int64_t n);
void convert_to_float(float* dst, const bf16* src, int64_t n);

// Which path convert_to_bf16 takes in this build: "avx512_bf16", "avx512f" or "scalar".
const char* bf16_convert_isa();

}  // namespace reckon
