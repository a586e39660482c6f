#include "cli/output.h"

#include <unistd.h>
#include <cstdio>

#include "runtime/clock.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/utf8.h"

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

namespace {

// Temporaries not yet renamed, for the signal handler: fixed buffers and unlink only (async-signal-safe). A run
// stopped by SIGINT, SIGTERM or SIGHUP while writing leaves no hidden half-file behind.
constexpr int kMaxPendingTemps = 16;
char g_pending[kMaxPendingTemps][PATH_MAX];
volatile std::sig_atomic_t g_pending_count = 0;

extern "C" void remove_pending_temps(int sig) {
  for (int i = 0; i < g_pending_count; ++i) ::unlink(g_pending[i]);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void install_temp_cleanup() {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = remove_pending_temps;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction old {};
      // Only where nobody else handles it (a shell's `trap '' SIGHUP` keeps ignoring it).
      if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) ::sigaction(sig, &sa, nullptr);
    }
    return true;
  }();
  (void)installed;
}

// /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N: the descriptor this process already has (so
// `--json /dev/stdout > file` appends to the shell's redirection instead of reopening the file at offset 0); -1
// for any other path.
int own_descriptor(const std::string& path) {
  if (path == "/dev/stdout") return 1;
  if (path == "/dev/stderr") return 2;
  for (const char* prefix : {"/dev/fd/", "/proc/self/fd/"}) {
    const std::string_view p(prefix);
    if (path.starts_with(p) && path.size() > p.size() && path.size() - p.size() <= 6 &&
        std::all_of(path.begin() + static_cast<std::ptrdiff_t>(p.size()), path.end(),
                    [](char c) { return c >= '0' && c <= '9'; })) {
      const int fd = std::stoi(path.substr(p.size()));
      return ::fcntl(fd, F_GETFD) != -1 ? fd : -1;
    }
  }
  return -1;
}

void write_stream(const PendingOutput& out) {
  const int own = own_descriptor(out.path);
  const int fd = own >= 0 ? own : ::open(out.path.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(fmt::format("{}: cannot open '{}': {}", out.flag, out.path, errno_text(errno)));
  struct stat st {};
  if (own < 0 && (::fstat(fd, &st) != 0 || !(S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)))) {  // changed since lstat
    ::close(fd);
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': it is no longer a device or pipe", out.flag, out.path));
  }
  const bool written = write_all(fd, out.content);
  const int write_errno = errno;
  const bool closed = own >= 0 || ::close(fd) == 0;
  if (!written || !closed) {
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': {}", out.flag, out.path, errno_text(!written ? write_errno : errno)));
  }
}

// A fresh temporary beside `out.path` (unique name, O_EXCL: never an existing file or a symlink) holding the
// content, every write, fsync and close checked; registered for the signal handler. Its name.
std::string write_temporary(const PendingOutput& out) {
  const std::string folder = folder_of(out.path);
  std::string tmp =
      (std::filesystem::path(folder) / ("." + std::filesystem::path(out.path).filename().string() + ".reckon-XXXXXX"))
          .string();
  if (tmp.size() >= PATH_MAX || g_pending_count >= kMaxPendingTemps) {
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': its temporary's name is too long", out.flag, out.path));
  }
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    throw std::runtime_error(
        fmt::format("{}: cannot create a temporary file in '{}': {}", out.flag, folder, errno_text(errno)));
  }
  std::memcpy(g_pending[g_pending_count], tmp.c_str(), tmp.size() + 1);
  g_pending_count = g_pending_count + 1;
  const mode_t mask = ::umask(0);
  ::umask(mask);
  bool ok = ::fchmod(fd, 0666 & ~mask) == 0;  // mkstemp makes 0600; an output file gets the usual mode
  ok = ok && write_all(fd, out.content);
  ok = ok && ::fsync(fd) == 0;
  int err = errno;
  if (::close(fd) != 0 && ok) ok = false, err = errno;
  if (!ok) throw std::runtime_error(fmt::format("{}: cannot write '{}': {}", out.flag, out.path, errno_text(err)));
  return tmp;
}

void remove_temporaries() {
  const int n = g_pending_count;
  for (int i = 0; i < n; ++i) ::unlink(g_pending[i]);
  g_pending_count = 0;
}

}  // namespace

void write_output_files(const std::vector<PendingOutput>& outputs) {
  install_temp_cleanup();
  std::vector<Target> kinds;
  for (const PendingOutput& out : outputs) {
    std::string why;
    kinds.push_back(own_descriptor(out.path) >= 0 ? Target::stream : target_kind(out.path, &why));
    if (kinds.back() == Target::other)
      throw std::runtime_error(fmt::format("{}: cannot write '{}': {}", out.flag, out.path, why));
  }
  // Every file to its temporary, then the devices and pipes, then the renames: a failure before the renames
  // leaves no file written (a device already written keeps what it got).
  std::vector<std::string> temps(outputs.size());
  try {
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (kinds[i] != Target::stream) temps[i] = write_temporary(outputs[i]);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (kinds[i] == Target::stream) write_stream(outputs[i]);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!temps[i].empty() && ::rename(temps[i].c_str(), outputs[i].path.c_str()) != 0) {
        throw std::runtime_error(
            fmt::format("{}: cannot write '{}': {}", outputs[i].flag, outputs[i].path, errno_text(errno)));
      }
    }
  } catch (...) {
    remove_temporaries();
    throw;
  }
  g_pending_count = 0;
  // The renames are durable once the folders are synced (best effort: some filesystems refuse fsync on a folder).
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (temps[i].empty()) continue;
    const int dir = ::open(folder_of(outputs[i].path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }
}

void write_output_file(std::string_view flag, const std::string& path, const std::string& content) {
  write_output_files({{std::string(flag), path, content}});
}

namespace {
nlohmann::json with_valid_utf8(const nlohmann::json& j) {
  if (j.is_string()) return escape_invalid_utf8(j.get_ref<const std::string&>());
  if (j.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const nlohmann::json& v : j) out.push_back(with_valid_utf8(v));
    return out;
  }
  if (j.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, v] : j.items()) out[escape_invalid_utf8(key)] = with_valid_utf8(v);
    return out;
  }
  return j;
}
}  // namespace

std::string json_text(const nlohmann::json& j, int indent) {
  try {
    return j.dump(indent) + "\n";
  } catch (const nlohmann::json::type_error&) {  // a string that is not UTF-8 (a path): its bytes as \xHH
    return with_valid_utf8(j).dump(indent) + "\n";
  }
}

void check_output_path(std::string_view flag, const std::string& path) {
  if (path.empty()) throw std::invalid_argument(fmt::format("{}: an empty path is not allowed", flag));
  const std::string name = std::filesystem::path(path).filename().string();
  // Room for the temporary's name beside it (".<name>.reckon-XXXXXX").
  if (path.size() + 16 >= PATH_MAX || name.size() + 16 > NAME_MAX) {
    throw std::invalid_argument(
        fmt::format("{}: the path is {} bytes (its file name {}); allowed: at most {} bytes, a "
                    "file name of at most {}",
                    flag, path.size(), name.size(), PATH_MAX - 17, NAME_MAX - 16));
  }
  if (own_descriptor(path) >= 0) return;  // this process's stdout, stderr or an open descriptor
  const std::string dir = folder_of(path);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw std::invalid_argument(fmt::format("{}: cannot write '{}': folder '{}' does not exist", flag, path, dir));
  }
  std::string why;
  const Target kind = target_kind(path, &why);
  if (kind == Target::other) throw std::invalid_argument(fmt::format("{}: cannot write '{}': {}", flag, path, why));
  if (kind == Target::stream) return;
  // Writable: a temporary can be made in the folder (read-only folders, permissions, a full inode table).
  std::string probe = (std::filesystem::path(dir) / ".reckon-probe-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  if (fd < 0) {
    throw std::invalid_argument(
        fmt::format("{}: cannot write '{}': cannot create a file in '{}' ({})", flag, path, dir, errno_text(errno)));
  }
  ::close(fd);
  ::unlink(probe.c_str());
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
