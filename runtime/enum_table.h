// One name ↔ value table per enum that a user can write (a config field's choices): parsing, printing, the
// allowed values in error messages and the JSON of a config all read the same table, so a new choice is one row.
//
//   inline constexpr EnumName<Recompute> kRecomputeNames[] = {{Recompute::none, "none"}, …};
//   enum_name(kRecomputeNames, r)          -> "none"
//   parse_enum(kRecomputeNames, "full")    -> Recompute::full (std::nullopt for an unknown name)
//   enum_choices(kRecomputeNames)          -> "none, attention, full"
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace reckon {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

template <typename E, size_t N>
const char* enum_name(const EnumName<E> (&table)[N], E value) {
  for (const EnumName<E>& row : table) {
    if (row.value == value) return row.name;
  }
  return "?";
}

template <typename E, size_t N>
std::optional<E> parse_enum(const EnumName<E> (&table)[N], std::string_view text) {
  for (const EnumName<E>& row : table) {
    if (text == row.name) return row.value;
  }
  return std::nullopt;
}

template <typename E, size_t N>
std::string enum_choices(const EnumName<E> (&table)[N]) {
  std::string out;
  for (const EnumName<E>& row : table) {
    if (!out.empty()) out += ", ";
    out += row.name;
  }
  return out;
}

}  // namespace reckon
