// Text that must be valid UTF-8 (JSON strings, safetensors metadata) built from bytes that may not be (a file path
// on Linux is any bytes but '/' and NUL).
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace reckon {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF), or 0 if there is none.
inline size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

// `s` with each byte that is not part of a well-formed UTF-8 sequence written as the four characters \xHH (and a
// backslash as \\ only where the text had to change, so valid text is returned unchanged).
inline std::string escape_invalid_utf8(std::string_view s) {
  bool valid = true;
  for (size_t i = 0; i < s.size() && valid;) {
    const size_t n = utf8_sequence_length(s, i);
    valid = n > 0;
    i += n;
  }
  if (valid) return std::string(s);
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      out += fmt::format("\\x{:02X}", static_cast<unsigned char>(s[i]));
      ++i;
    } else {
      if (s[i] == '\\') out += '\\';
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace reckon
