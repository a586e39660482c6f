#include "runtime/checked.h"

#include <fmt/format.h>

namespace reckon {

void throw_size_overflow(int64_t a, char op, int64_t b) {
  const char* sym = op == '*' ? "×" : op == '+' ? "+" : op == '-' ? "−" : "÷";
  throw SizeOverflow(fmt::format("integer overflow: {} {} {} does not fit int64 (largest value {})", a, sym, b,
                                 std::numeric_limits<int64_t>::max()));
}

}  // namespace reckon
