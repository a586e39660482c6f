// check_arg: throw std::invalid_argument with a formatted message (naming the argument and its allowed
// range) when a condition fails. The one way the runtime rejects bad input.
#pragma once

#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace reckon {

template <typename... Args>
void check_arg(bool ok, fmt::format_string<Args...> message, Args&&... args) {
  if (!ok) throw std::invalid_argument(fmt::format(message, std::forward<Args>(args)...));
}

}  // namespace reckon
