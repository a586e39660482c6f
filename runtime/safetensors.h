// safetensors (the Hugging Face format every framework reads): 8 bytes of little-endian header length N, N bytes
// of JSON header, then the raw data. The header maps each tensor's name to
//   {"dtype": "F32" | "BF16" | "I32", "shape": [d0, d1, …], "data_offsets": [begin, end]}   (bytes into the data)
// and "__metadata__" to an object of string values. reckon writes the header padded with spaces to a multiple of
// 8 bytes (as the reference implementation does) and the tensors back to back in the order given.
//
// The reader trusts nothing: the header length is checked against the file before anything is allocated, the
// JSON must nest at most 4 levels (checked before the parser sees it), every entry needs exactly its three
// fields of the right types, a known dtype, non-negative dimensions whose element count × dtype size equals
// end − begin (checked arithmetic), and the entries must tile the data exactly — sorted by begin, no overlap,
// no hole, nothing after the last. Any violation is std::invalid_argument naming the file and the entry.
// (tests/fuzz_safetensors.cpp mutates files by the hundred thousand under ASan + UBSan.)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace reckon {

constexpr int64_t kMaxSafetensorsHeaderBytes = int64_t{100} << 20;  // the reference implementation's limit

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data
};

struct Safetensors {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsEntry> tensors;  // sorted by begin
  std::string data;                       // the bytes after the header (parsed in memory)
  std::string source;                     // open_safetensors: the file the data is read from, tensor by tensor
  int64_t data_start = 0;                 // … the data's first byte in that file
  int64_t source_bytes = 0;               // … and the file's size when its header was read
  const SafetensorsEntry* find(std::string_view name) const;  // nullptr if absent
};

// The file's bytes for `tensors` (each contiguous; float32, bfloat16 or int32) and `metadata` (bytes of its strings
// that are not UTF-8, as a path may hold, written as \xHH: runtime/utf8.h). Throws
// std::invalid_argument for a repeated or empty name, a non-contiguous tensor, or the name "__metadata__".
std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata);
// Parses and validates `bytes`; `what` names the input in messages (a path).
Safetensors parse_safetensors(std::string bytes, const std::string& what);
// Reads a regular file of at most `max_bytes` and parses it. Throws std::invalid_argument naming the path.
Safetensors read_safetensors(const std::string& path, int64_t max_bytes);
// Reads only the header of a regular file (its size checked against the header, nothing else held): the tensors
// are read later, each straight into its destination (read_entry_bytes), so a large file is never held whole.
Safetensors open_safetensors(const std::string& path);
// Copies the entry's bytes into dst (end − begin bytes): from memory, or from the opened file (an error naming it
// if it changed size since its header was read).
void read_entry_bytes(const Safetensors& file, const SafetensorsEntry& e, void* dst);
// Copies the entry `name` into dst, which must have its dtype and shape. Throws std::invalid_argument naming
// the file (`what`), the entry and what differs.
void copy_from_safetensors(const Safetensors& file, const std::string& what, const std::string& name,
                           const Tensor& dst);

}  // namespace reckon
