#include "cli/output.h"

#include <unistd.h>
#include <cstdio>

#include "runtime/clock.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

int64_t parse_bytes(std::string_view flag, std::string_view text) {
  const auto bad = [&] {
    return std::invalid_argument(
        fmt::format("{}: '{}' is not a byte count; use bytes (e.g. 1000000) or a number with a unit: B, KB, MB, GB, TB "
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
  struct Unit {
    const char* name;
    double scale;
  };
  constexpr Unit units[] = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const Unit& u : units) {
    if (unit == u.name) {
      const double bytes = std::round(number * u.scale);
      if (!(bytes >= 1.0 && bytes <= 4611686018427387904.0)) throw bad();
      return static_cast<int64_t>(bytes);
    }
  }
  throw bad();
}

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// What is at `path` now, without following a symlink.
enum class Target { absent, regular, stream, other };  // stream: a character device or a pipe
Target target_kind(const std::string& path, std::string* what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Target::absent;
    *what = fmt::format("cannot inspect it ({})", errno_text(errno));
    return Target::other;
  }
  if (S_ISREG(st.st_mode)) return Target::regular;
  if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return Target::stream;
  struct stat resolved {};
  if (S_ISLNK(st.st_mode) && ::stat(path.c_str(), &resolved) == 0 &&
      (S_ISCHR(resolved.st_mode) || S_ISFIFO(resolved.st_mode))) {
    return Target::stream;  // /dev/stdout → /proc/self/fd/1 → a tty or a pipe: written in place
  }
  *what = S_ISLNK(st.st_mode)    ? "it is a symbolic link (name the file it points to)"
          : S_ISDIR(st.st_mode)  ? "it is a folder"
          : S_ISBLK(st.st_mode)  ? "it is a block device"
          : S_ISSOCK(st.st_mode) ? "it is a socket"
                                 : "it is not a regular file";
  return Target::other;
}

std::string folder_of(const std::string& path) {
  const std::filesystem::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : std::string(".");
}

// Writes all of `content` to `fd`; false (errno set) on any failed or short write.
bool write_all(int fd, const std::string& content) {
  const char* data = content.data();
  size_t left = content.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void write_output_file(std::string_view flag, const std::string& path, const std::string& content) {
  std::string why;
  const Target kind = target_kind(path, &why);
  if (kind == Target::other) throw std::runtime_error(fmt::format("{}: cannot write '{}': {}", flag, path, why));
  if (kind == Target::stream) {
    // A device or pipe the user named on purpose (/dev/null, /dev/stdout, a tty, a FIFO): written in place,
    // never replaced.
    const int fd = ::open(path.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot open '{}': {}", flag, path, errno_text(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {  // changed since lstat
      ::close(fd);
      throw std::runtime_error(fmt::format("{}: cannot write '{}': it is no longer a device or pipe", flag, path));
    }
    const bool written = write_all(fd, content);
    const int write_errno = errno;
    const bool closed = ::close(fd) == 0;
    if (!written || !closed) {
      throw std::runtime_error(
          fmt::format("{}: cannot write '{}': {}", flag, path, errno_text(!written ? write_errno : errno)));
    }
    return;
  }
  // A regular file or nothing yet: a fresh temporary beside it (unique name, O_EXCL: never an existing file
  // or a symlink), every write, fsync and close checked, then one rename. A reader sees the old file or the
  // whole new one; two writers each rename their own complete file.
  const std::string folder = folder_of(path);
  std::string tmp =
      (std::filesystem::path(folder) / ("." + std::filesystem::path(path).filename().string() + ".reckon-XXXXXX"))
          .string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    throw std::runtime_error(
        fmt::format("{}: cannot create a temporary file in '{}': {}", flag, folder, errno_text(errno)));
  }
  const mode_t mask = ::umask(0);
  ::umask(mask);
  bool ok = ::fchmod(fd, 0666 & ~mask) == 0;  // mkstemp makes 0600; an output file gets the usual mode
  ok = ok && write_all(fd, content);
  ok = ok && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, err = errno;
  if (!ok) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot write '{}': {}", flag, path, errno_text(err)));
  }
  // The rename is durable once the folder is synced (best effort: some filesystems refuse fsync on a folder).
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void check_output_path(std::string_view flag, const std::string& path) {
  const std::string dir = folder_of(path);
  if (path.empty()) throw std::invalid_argument(fmt::format("{}: an empty path is not allowed", flag));
  if (!std::filesystem::is_directory(dir)) {
    throw std::invalid_argument(fmt::format("{}: cannot write '{}': folder '{}' does not exist", flag, path, dir));
  }
  std::string why;
  if (target_kind(path, &why) == Target::other) {
    throw std::invalid_argument(fmt::format("{}: cannot write '{}': {}", flag, path, why));
  }
}

void check_distinct_paths(const std::vector<std::pair<std::string, std::string>>& flag_paths,
                          const std::pair<std::string, std::string>& allowed) {
  std::vector<std::pair<std::string, std::filesystem::path>> seen;
  for (const auto& [flag, path] : flag_paths) {
    if (path.empty()) continue;
    std::error_code ec;
    std::filesystem::path canonical = std::filesystem::weakly_canonical(path, ec);
    if (ec) canonical = std::filesystem::absolute(path).lexically_normal();
    for (const auto& [other_flag, other] : seen) {
      const bool exempt = (other_flag == allowed.first && flag == allowed.second) ||
                          (other_flag == allowed.second && flag == allowed.first);
      if (other == canonical && !exempt) {
        throw std::invalid_argument(
            fmt::format("{} and {} name the same file '{}'; give each its own path", other_flag, flag, path));
      }
    }
    seen.emplace_back(flag, canonical);
  }
}

Progress::Progress(std::string what, int64_t total)
    : what_(std::move(what)), total_(total), enabled_(isatty(fileno(stdout)) != 0), start_ns_(now_ns()) {}

void Progress::update(int64_t done) {
  if (!enabled_ || done <= 0) return;
  const double elapsed = static_cast<double>(now_ns() - start_ns_) * 1e-9;
  const double eta = elapsed / static_cast<double>(done) * static_cast<double>(std::max<int64_t>(total_ - done, 0));
  fmt::print("\r{} {}/{} · {:.0f} s elapsed · ETA {:.0f} s   ", what_, done, total_, elapsed, eta);
  std::fflush(stdout);
  shown_ = true;
}

void Progress::finish() {
  if (shown_) {
    fmt::print("\r{:<100}\r", "");
    std::fflush(stdout);
  }
  shown_ = false;
}

Progress::~Progress() { finish(); }

}  // namespace reckon
