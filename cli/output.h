// Output helpers shared by the subcommands: byte counts with units, atomic file writes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace reckon {

// "80GB" = 80·10⁹, "80GiB" = 80·2³⁰, "512MiB", "1.5GB", "123456" (bytes). Units: B, KB, MB, GB, TB (powers
// of 10), KiB, MiB, GiB, TiB (powers of 2). Throws std::invalid_argument naming `flag` and the syntax.
int64_t parse_bytes(std::string_view flag, std::string_view text);

// Writes `content` to `path` through a temporary file in the same folder and a rename, so a reader never sees
// a half-written file. Throws std::runtime_error naming the path on failure.
void write_file_atomically(const std::string& path, const std::string& content);

// Throws std::invalid_argument naming `flag` if the folder that would hold `path` does not exist.
void check_output_path(std::string_view flag, const std::string& path);

}  // namespace reckon
