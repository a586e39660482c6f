// A 64-bit fingerprint of bytes, to tell whether two ranks or two runs hold the same data (a data file, a starting
// state): not cryptographic, but any changed byte changes it with probability 1 − 2^-64 for data not built to
// collide. 8-byte words through a multiply–rotate mix (as in wyhash/xxHash's accumulate step), so a file of GBs
// fingerprints at memory speed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <fmt/format.h>

namespace reckon {

inline uint64_t fingerprint64(const void* data, size_t n, uint64_t h = 0x9E3779B97F4A7C15ULL) {
  constexpr uint64_t kMul = 0xBF58476D1CE4E5B9ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  auto mix = [](uint64_t a, uint64_t w) {
    a ^= w * kMul;
    a = (a << 31) | (a >> 33);
    return a * 0x94D049BB133111EBULL;
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  uint64_t tail = 0;
  if (n > i) std::memcpy(&tail, p + i, n - i);
  h = mix(h, tail ^ (static_cast<uint64_t>(n) << 3));
  h ^= h >> 29;
  return h * kMul ^ (h >> 32);
}

inline std::string fingerprint_hex(uint64_t h) { return fmt::format("{:016x}", h); }

}  // namespace reckon
