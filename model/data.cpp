#include "model/data.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/fingerprint.h"
#include "runtime/random.h"

namespace reckon {

TokenData TokenData::from_file(const std::string& path, int64_t vocab_size, int64_t context_length, int64_t max_bytes) {
  check_arg(vocab_size >= 256, "--data {}: byte-level tokens need vocab_size >= 256, got {} (use --data random)", path,
            vocab_size);
  struct stat st {};
  const bool found = ::stat(path.c_str(), &st) == 0;
  const int err = errno;  // before anything else can change it
  check_arg(found, "--data: cannot read file '{}': {}", path, std::strerror(err));
  check_arg(S_ISREG(st.st_mode), "--data: '{}' is not a regular file{}", path,
            S_ISDIR(st.st_mode) ? " (it is a folder)" : "");
  check_arg(st.st_size <= max_bytes,
            "--data: '{}' is {} bytes; held in memory beside the training step it must be at most {} bytes (the "
            "memory budget less the step's peak; raise --max-memory or use a smaller file)",
            path, static_cast<int64_t>(st.st_size), std::max<int64_t>(max_bytes, 0));
  std::ifstream in(path, std::ios::binary);
  check_arg(in.good(), "--data: cannot read file '{}'", path);
  TokenData d;
  // Read to the end, at most max_bytes + 1: a file that grew since stat cannot take more than the budget, and
  // one whose size stat does not know (/proc, /sys report 0) is read whole.
  const int64_t limit = std::max<int64_t>(max_bytes, 0) + 1;
  d.bytes_.reserve(static_cast<size_t>(std::min<int64_t>(st.st_size + 1, limit)));
  constexpr int64_t kChunk = 1 << 20;
  while (in && static_cast<int64_t>(d.bytes_.size()) < limit) {
    const size_t at = d.bytes_.size();
    d.bytes_.resize(at + static_cast<size_t>(std::min(kChunk, limit - static_cast<int64_t>(at))));
    in.read(reinterpret_cast<char*>(d.bytes_.data() + at), static_cast<std::streamsize>(d.bytes_.size() - at));
    d.bytes_.resize(at + static_cast<size_t>(in.gcount()));
  }
  check_arg(!in.bad(), "--data: cannot read file '{}'", path);
  check_arg(static_cast<int64_t>(d.bytes_.size()) <= max_bytes,
            "--data: '{}' holds more than the {} bytes allowed (it grew while being read, or its size was not known)",
            path, std::max<int64_t>(max_bytes, 0));
  check_arg(static_cast<int64_t>(d.bytes_.size()) >= context_length + 2,
            "--data {}: file has {} bytes, needs at least context_length + 2 = {}", path, d.bytes_.size(),
            context_length + 2);
  d.source_ = path;
  d.vocab_size_ = vocab_size;
  return d;
}

TokenData TokenData::random(int64_t vocab_size, uint64_t seed) {
  TokenData d;
  d.random_ = true;
  d.vocab_size_ = vocab_size;
  d.seed_ = seed;
  d.source_ = "random";
  return d;
}

void TokenData::fill_batch(const Tensor& tokens, const Tensor& targets, int64_t step) {
  fill_batch_rows(tokens, targets, step, 0, tokens.size(0));
}

void TokenData::fill_batch_rows(const Tensor& tokens, const Tensor& targets, int64_t step, int64_t first_row,
                                int64_t global_rows) {
  const int64_t b = tokens.size(0), t = tokens.size(1);
  int32_t* x = tokens.data_i32();
  int32_t* y = targets.data_i32();
  if (random_) {
    // One stream per step, rows in order: earlier rows are drawn and dropped so a slice sees its rows exactly.
    Rng rng(seed_ ^ (0x5DEECE66DULL * static_cast<uint64_t>(step + 1)));
    for (int64_t g = 0; g < first_row + b; ++g) {
      const int64_t i = g - first_row;
      int32_t prev = static_cast<int32_t>(rng.below(vocab_size_));
      for (int64_t j = 0; j < t; ++j) {
        const auto next = static_cast<int32_t>(rng.below(vocab_size_));
        if (i >= 0) {
          x[i * t + j] = prev;
          y[i * t + j] = next;
        }
        prev = next;
      }
    }
    return;
  }
  const int64_t span = static_cast<int64_t>(bytes_.size()) - t - 1;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t start = ((CheckedInt(step) * global_rows + first_row + i) * t).value() %
                          span;  // checked: a resumed step count is bounded so this fits
    for (int64_t j = 0; j < t; ++j) {
      x[i * t + j] = bytes_[static_cast<size_t>(start + j)];
      y[i * t + j] = bytes_[static_cast<size_t>(start + j + 1)];
    }
  }
}

std::string TokenData::identity() const {
  if (identity_.empty()) {  // once: a file of GBs takes a second
    identity_ = random_ ? "random"
                        : fmt::format("bytes={} fingerprint={}", bytes_.size(),
                                      fingerprint_hex(fingerprint64(bytes_.data(), bytes_.size())));
  }
  return identity_;
}

std::string TokenData::description() const {
  return random_ ? "random tokens" : fmt::format("{} ({} bytes, byte-level tokens)", source_, bytes_.size());
}

}  // namespace reckon
