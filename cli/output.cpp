#include "cli/output.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

int64_t parse_bytes(std::string_view flag, std::string_view text) {
  const auto bad = [&] {
    return std::invalid_argument(fmt::format(
        "{}: '{}' is not a byte count; use bytes (e.g. 1000000) or a number with a unit: B, KB, MB, GB, TB "
        "(powers of 10) or KiB, MiB, GiB, TiB (powers of 2), e.g. 80GB or 80GiB; allowed range [1, 2^62]",
        flag, text));
  };
  size_t split = 0;
  while (split < text.size() && (std::isdigit(static_cast<unsigned char>(text[split])) || text[split] == '.')) ++split;
  if (split == 0) throw bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(std::string(text.substr(0, split)), &used);
    if (used != split) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  const std::string_view unit = text.substr(split);
  struct Unit { const char* name; double scale; };
  constexpr Unit units[] = {{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
                            {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                            {"TiB", 1099511627776.0}};
  for (const Unit& u : units) {
    if (unit == u.name) {
      const double bytes = std::round(number * u.scale);
      if (!(bytes >= 1.0 && bytes <= 4611686018427387904.0)) throw bad();
      return static_cast<int64_t>(bytes);
    }
  }
  throw bad();
}

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw std::runtime_error(fmt::format("cannot write {}", path));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("cannot write {} (rename failed)", path));
  }
}

void check_output_path(std::string_view flag, const std::string& path) {
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  if (path.empty() || !std::filesystem::is_directory(dir) || std::filesystem::is_directory(p)) {
    throw std::invalid_argument(fmt::format("{}: cannot write '{}': folder '{}' does not exist or the path is a folder",
                                            flag, path, dir.string()));
  }
}

}  // namespace reckon
