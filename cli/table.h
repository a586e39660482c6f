// Markdown tables that paste into an issue or a notebook and still line up in a terminal.
#pragma once

#include <string>
#include <vector>

namespace reckon {

struct Table {
  std::vector<std::string> header;
  std::vector<bool> right_align;  // per column; numbers right-aligned
  std::vector<std::vector<std::string>> rows;

  void add(std::vector<std::string> row) { rows.push_back(std::move(row)); }
  std::string markdown() const;
};

std::string fmt_bytes_mib(long long bytes);  // "12.50"
std::string fmt_int(long long v);            // "1,234,567"

}  // namespace reckon
