// check_arg: throw std::invalid_argument with a formatted message (naming the argument and its allowed
// range) when a condition fails. The one way the runtime rejects bad input.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace reckon {

template <typename... Args>
void check_arg(bool ok, fmt::format_string<Args...> message, Args&&... args) {
  if (!ok) throw std::invalid_argument(fmt::format(message, std::forward<Args>(args)...));
}

// "<field>: <v> is outside the allowed range [lo, hi]" — the one range message of config fields and flags.
inline void check_range(std::string_view field, int64_t v, int64_t lo, int64_t hi) {
  check_arg(v >= lo && v <= hi, "{}: {} is outside the allowed range [{}, {}]", field, v, lo, hi);
}
// Finite and within the range; either end may be open: "(0, 1]".
inline void check_range(std::string_view field, double v, double lo, double hi, bool lo_open = false,
                        bool hi_open = false) {
  const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  check_arg(ok, "{}: {} is outside the allowed range {}{}, {}{}", field, v, lo_open ? "(" : "[", lo, hi,
            hi_open ? ")" : "]");
}

}  // namespace reckon
