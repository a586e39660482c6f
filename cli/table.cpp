#include "cli/table.h"

#include <algorithm>

#include <fmt/format.h>

namespace reckon {

std::string Table::markdown() const {
  std::vector<size_t> width(header.size(), 3);
  for (size_t c = 0; c < header.size(); ++c) width[c] = std::max(width[c], header[c].size());
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  auto right = [&](size_t c) { return c < right_align.size() && right_align[c]; };
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      s += right(c) ? fmt::format(" {:>{}} |", cell, width[c]) : fmt::format(" {:<{}} |", cell, width[c]);
    }
    return s + "\n";
  };
  std::string out = line(header);
  out += "|";
  for (size_t c = 0; c < width.size(); ++c) {
    out += right(c) ? " " + std::string(width[c] - 1, '-') + ": |" : " " + std::string(width[c], '-') + " |";
  }
  out += "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string fmt_bytes_mib(long long bytes) { return fmt::format("{:.2f}", static_cast<double>(bytes) / (1 << 20)); }

std::string fmt_int(long long v) {
  // Digits right to left into a buffer, a comma every three.
  char buf[32];
  int pos = 31;
  buf[pos] = '\0';
  unsigned long long u = v < 0 ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
  int digits = 0;
  do {
    if (digits > 0 && digits % 3 == 0) buf[--pos] = ',';
    buf[--pos] = static_cast<char>('0' + u % 10);
    u /= 10;
    ++digits;
  } while (u > 0);
  if (v < 0) buf[--pos] = '-';
  return std::string(buf + pos);
}

}  // namespace reckon
