#include "runtime/bf16.h"

#include <immintrin.h>

namespace reckon {

// The vector paths need AVX-512 F, BW (16-bit lanes) and VL (256-bit masked stores): every machine of the
// project's kind (Sapphire Rapids, Zen 4) has them.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define RECKON_BF16_AVX512 1
#endif

#if RECKON_BF16_AVX512
namespace {
// The AVX-512F emulation of VCVTNEPS2BF16 (16 lanes): the same integer steps as to_bf16.
inline __m256i cvt16_emulated(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i magnitude = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(magnitude, _mm512_set1_epi32(0x7f800000));
  const __mmask16 tiny = _mm512_cmplt_epu32_mask(magnitude, _mm512_set1_epi32(0x00800000));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  r = _mm512_mask_mov_epi32(r, tiny, _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)));
  return _mm512_cvtepi32_epi16(r);
}

inline __m256i cvt16(__m512 x) {
#if defined(__AVX512BF16__)
  return (__m256i)_mm512_cvtneps_pbh(x);
#else
  return cvt16_emulated(x);
#endif
}
}  // namespace
#endif

void convert_to_bf16(bf16* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if RECKON_BF16_AVX512
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), cvt16(_mm512_loadu_ps(src + i)));
  }
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, tail, cvt16(_mm512_maskz_loadu_ps(tail, src + i)));
    i = n;
  }
#endif
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

void convert_to_float(float* dst, const bf16* src, int64_t n) {
  int64_t i = 0;
#if RECKON_BF16_AVX512
  for (; i + 16 <= n; i += 16) {
    // The zero-masked forms: GCC 12 warns on the unmasked ones' _mm512_undefined source.
    const __m512i wide =
        _mm512_maskz_cvtepu16_epi32(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, wide, 16)));
  }
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

const char* bf16_convert_isa() {
#if RECKON_BF16_AVX512 && defined(__AVX512BF16__)
  return "avx512_bf16";
#elif RECKON_BF16_AVX512
  return "avx512f";
#else
  return "scalar";
#endif
}

}  // namespace reckon
