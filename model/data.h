// Training batches: byte-level tokens from any text file (token = byte value, so vocab_size ≥ 256), or
// uniform random tokens. Windows of T+1 tokens: inputs are the first T, targets the last T.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace reckon {

class TokenData {
 public:
  // Reads the whole file, which must be a regular file of at most `max_bytes` (it is held in memory: the
  // caller's memory budget decides). Throws std::invalid_argument naming --data when the file cannot be read,
  // is not a regular file (a folder, /dev/zero), is larger than max_bytes, is shorter than context_length + 2
  // bytes, or vocab_size < 256.
  static TokenData from_file(const std::string& path, int64_t vocab_size, int64_t context_length, int64_t max_bytes);
  static TokenData random(int64_t vocab_size, uint64_t seed);

  // Fills tokens and targets (int32 (B, T)) with batch number `step`. File data: batch b of step s starts at
  // byte ((s·B + b)·T) mod (size − T − 1), so consecutive steps walk through the text. Random data: fresh
  // uniform tokens (targets = next token of the same random stream, so there is nothing to learn).
  void fill_batch(const Tensor& tokens, const Tensor& targets, int64_t step);
  // Data parallelism: rows [first_row, first_row + B) of the global batch of `global_rows` rows of step `step`
  // (B = tokens.size(0)): N ranks filling their slices see exactly the rows of fill_batch with the global batch.
  void fill_batch_rows(const Tensor& tokens, const Tensor& targets, int64_t step, int64_t first_row,
                       int64_t global_rows);

  std::string description() const;
  // What the batches are made of, to compare runs and ranks: "random" or the file's size and fingerprint
  // (runtime/fingerprint.h) of its bytes, "bytes=N fingerprint=HEX".
  std::string identity() const;
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }

 private:
  std::vector<uint8_t> bytes_;
  std::string source_;
  mutable std::string identity_;  // identity(), computed at its first call
  int64_t vocab_size_ = 0;
  uint64_t seed_ = 0;
  bool random_ = false;
};

}  // namespace reckon
