// Output helpers shared by the subcommands: byte counts with units, atomic file writes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace reckon {

// "80GB" = 80·10⁹, "80GiB" = 80·2³⁰, "512MiB", "1.5GB", "123456" (bytes). Units: B, KB, MB, GB, TB (powers
// of 10), KiB, MiB, GiB, TiB (powers of 2). Throws std::invalid_argument naming `flag` and the syntax.
int64_t parse_bytes(std::string_view flag, std::string_view text);

// The one writer of every file reckon writes (JSON, trace, …). A regular file or a new path: a unique
// temporary in the same folder (mkstemp: O_EXCL, never an existing file or a symlink), every write, fsync and
// close checked, then rename — a reader sees the old file or the whole new one, never part of one. A character
// device or pipe the user named (/dev/null, /dev/stdout, a FIFO) is written in place, never replaced;
// /dev/full fails. Any other existing target (a symlink to a file, folder, socket, block device) is refused. Throws
// std::runtime_error naming `flag` and the path; nothing is left behind on failure.
void write_output_file(std::string_view flag, const std::string& path, const std::string& content);
// Several outputs of one command, all or none of the files: each file to its temporary first, then the devices and
// pipes, then every rename. A failure before the renames (a full disk, /dev/full) leaves none of the files written
// (nothing can take back what a device already got). /dev/stdout, /dev/stderr and /dev/fd/N are written to this
// process's own descriptor (so `--json /dev/stdout > run.json` works). SIGINT, SIGTERM or SIGHUP while writing
// removes the temporaries before the process ends.
struct PendingOutput {
  std::string flag, path, content;
};
void write_output_files(const std::vector<PendingOutput>& outputs);

// The text of a JSON output (`indent` as nlohmann's dump, then a newline). JSON holds UTF-8 only: bytes of a string
// that are not (a file path may hold any) are written as \xHH (runtime/utf8.h), never an exception that loses the
// run's outputs.
std::string json_text(const nlohmann::json& j, int indent);

// Before any work: throws std::invalid_argument naming `flag` if `path` is empty or too long (PATH_MAX, NAME_MAX,
// with room for the temporary's name), its folder does not exist or no file can be created there, or what is there
// now would be refused by write_output_file.
void check_output_path(std::string_view flag, const std::string& path);

// Throws std::invalid_argument if two of the (flag, path) pairs name the same file (after resolving "..",
// symlinked folders and relative paths); empty paths are skipped. Inputs may be listed to protect them too; the
// flags of an `allowed` pair may name one file (train's --save replacing the checkpoint --resume read).
void check_distinct_paths(const std::vector<std::pair<std::string, std::string>>& flag_paths,
                          const std::pair<std::string, std::string>& allowed = {});

// Progress of a long command on a terminal: "\r<what> k/N · 12 s elapsed · ETA 30 s" rewritten in place on
// stdout; nothing at all when stdout is not a terminal (pipes, files, CI logs). The ETA is the mean time per
// item so far times the items left.
class Progress {
 public:
  Progress(std::string what, int64_t total);
  void update(int64_t done);  // after `done` items
  void finish();              // clears the line (also on destruction)
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  std::string what_;
  int64_t total_;
  bool enabled_;
  bool shown_ = false;
  int64_t start_ns_;
};

}  // namespace reckon
