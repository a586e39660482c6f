// One time base for the whole runtime: nanoseconds since the process first asked, so memory events and
// op slices line up in a trace.
#pragma once

#include <chrono>
#include <cstdint>

namespace reckon {

inline int64_t now_ns() {
  static const auto epoch = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - epoch).count();
}

}  // namespace reckon
