#include "runtime/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/check.h"
#include "runtime/checked.h"
#include "runtime/utf8.h"

namespace reckon {

namespace {

const char* safetensors_dtype(DType d) {
  switch (d) {
    case DType::f32:
      return "F32";
    case DType::bf16:
      return "BF16";
    case DType::i32:
      return "I32";
  }
  return "?";
}

// The deepest [ / { nesting outside strings (escapes honoured): refused above 4 before the JSON parser runs.
int json_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{')
      deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}')
      --depth;
  }
  return deepest;
}

// A JSON integer in [0, int64 max], or -1.
int64_t non_negative(const nlohmann::json& v) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX))
    return static_cast<int64_t>(v.get<uint64_t>());
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  return -1;
}

}  // namespace

const SafetensorsEntry* Safetensors::find(std::string_view name) const {
  for (const SafetensorsEntry& e : tensors) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  // JSON holds UTF-8 only: other bytes (a file path's) are written as \xHH.
  for (const auto& [key, value] : metadata) header["__metadata__"][escape_invalid_utf8(key)] = escape_invalid_utf8(value);
  std::set<std::string> names;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    check_arg(!name.empty() && name != "__metadata__", "safetensors: tensor name '{}' is not allowed", name);
    check_arg(names.insert(name).second, "safetensors: tensor name '{}' appears twice", name);
    check_arg(t.defined() && t.is_contiguous(), "safetensors: tensor '{}' must be defined and contiguous", name);
    const int64_t bytes = t.numel() * dtype_bytes(t.dtype());
    header[name] = {
        {"dtype", safetensors_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += text;
  out.reserve(out.size() + static_cast<size_t>(offset));
  for (const auto& [name, t] : tensors) {
    out.append(static_cast<const char*>(t.raw_data()), static_cast<size_t>(t.numel() * dtype_bytes(t.dtype())));
  }
  return out;
}

namespace {

std::invalid_argument not_safetensors(const std::string& what, const std::string& why) {
  return std::invalid_argument(fmt::format("{}: not a valid safetensors file: {}", what, why));
}

// The header length from the first 8 bytes, checked against the `available` bytes after them and the limit.
int64_t header_length(const char* first8, uint64_t available, const std::string& what) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(first8[i])) << (8 * i);
  if (n > available || n > static_cast<uint64_t>(kMaxSafetensorsHeaderBytes)) {
    throw not_safetensors(what, fmt::format("header length {} exceeds the {} bytes after it (limit {})", n, available,
                                            kMaxSafetensorsHeaderBytes));
  }
  return static_cast<int64_t>(n);
}

// The entries and metadata of a header `text` followed by `data_size` bytes of data, validated.
Safetensors parse_header(std::string_view text, int64_t data_size, const std::string& what) {
  auto fail = [&](const std::string& why) { return not_safetensors(what, why); };
  if (json_depth(text) > 4) throw fail("the header nests deeper than 4 levels");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw fail(fmt::format("the header is not JSON ({})", e.what()));
  }
  if (!header.is_object()) throw fail("the header is not a JSON object");
  Safetensors out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw fail("__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          throw fail(fmt::format("__metadata__['{}'] must be a string, got {}", key, value.type_name()));
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("tensor '{}'", name);
    if (name.empty()) throw fail("a tensor with an empty name");
    if (!entry.is_object() || entry.size() != 3 || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      throw fail(where + " must be an object with exactly dtype, shape and data_offsets");
    }
    SafetensorsEntry e;
    e.name = name;
    const nlohmann::json& dtype = entry["dtype"];
    if (!dtype.is_string()) throw fail(where + ": dtype must be a string");
    const std::string d = dtype.get<std::string>();
    if (d == "F32")
      e.dtype = DType::f32;
    else if (d == "BF16")
      e.dtype = DType::bf16;
    else if (d == "I32")
      e.dtype = DType::i32;
    else
      throw fail(fmt::format("{}: dtype '{}' is not one reckon reads (F32, BF16, I32)", where, d));
    const nlohmann::json& shape = entry["shape"];
    if (!shape.is_array() || shape.size() > 8) throw fail(where + ": shape must be an array of at most 8 dimensions");
    CheckedInt elements = 1;
    try {
      auto integer = [&](const nlohmann::json& v, const char* field) {
        const int64_t x = non_negative(v);
        if (x < 0)
          throw fail(
              fmt::format("{}: {} must be an integer in [0, 9223372036854775807], got {}", where, field, v.dump()));
        return x;
      };
      for (const nlohmann::json& dim : shape) {
        e.shape.push_back(integer(dim, "a dimension"));
        elements = elements * e.shape.back();
      }
      const nlohmann::json& offsets = entry["data_offsets"];
      if (!offsets.is_array() || offsets.size() != 2) throw fail(where + ": data_offsets must be [begin, end]");
      e.begin = integer(offsets[0], "begin");
      e.end = integer(offsets[1], "end");
      if (e.begin > e.end || e.end > data_size) {
        throw fail(
            fmt::format("{}: data_offsets [{}, {}] outside the {} data bytes", where, e.begin, e.end, data_size));
      }
      if ((elements * dtype_bytes(e.dtype)).value() != e.end - e.begin) {
        throw fail(fmt::format("{}: shape [{}] of {} needs {} bytes, data_offsets give {}", where,
                               fmt::join(e.shape, ", "), d, (elements * dtype_bytes(e.dtype)).value(),
                               e.end - e.begin));
      }
    } catch (const SizeOverflow&) {
      throw fail(where + ": its element count does not fit int64");
    }
    out.tensors.push_back(std::move(e));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  int64_t expected = 0;
  for (const SafetensorsEntry& e : out.tensors) {
    if (e.begin != expected) {
      throw fail(
          fmt::format("tensor '{}' starts at byte {}, expected {} (the entries must tile the data: no overlap, "
                      "no hole)",
                      e.name, e.begin, expected));
    }
    expected = e.end;
  }
  if (expected != data_size) throw fail(fmt::format("{} data bytes, the entries cover {}", data_size, expected));
  return out;
}

}  // namespace

Safetensors parse_safetensors(std::string bytes, const std::string& what) {
  if (bytes.size() < 8)
    throw not_safetensors(what, fmt::format("{} bytes, shorter than the 8-byte header length", bytes.size()));
  const uint64_t available = bytes.size() - 8;
  const int64_t n = header_length(bytes.data(), available, what);
  Safetensors out = parse_header(std::string_view(bytes.data() + 8, static_cast<size_t>(n)),
                                 static_cast<int64_t>(available) - n, what);
  out.data = bytes.substr(static_cast<size_t>(8 + n));
  return out;
}

namespace {
uintmax_t regular_file_size(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  check_arg(!ec && std::filesystem::is_regular_file(status), "{}: not a regular file", path);
  const auto size = std::filesystem::file_size(path, ec);
  check_arg(!ec, "{}: cannot read its size", path);
  return size;
}
}  // namespace

Safetensors read_safetensors(const std::string& path, int64_t max_bytes) {
  const uintmax_t size = regular_file_size(path);
  check_arg(size <= static_cast<uintmax_t>(max_bytes), "{}: {} bytes, above the allowed {} bytes", path, size,
            max_bytes);
  std::ifstream in(path, std::ios::binary);
  check_arg(static_cast<bool>(in), "{}: cannot open", path);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  check_arg(static_cast<uintmax_t>(in.gcount()) == size, "{}: read {} of {} bytes", path, in.gcount(), size);
  return parse_safetensors(std::move(bytes), path);
}

Safetensors open_safetensors(const std::string& path) {
  const uintmax_t size = regular_file_size(path);
  std::ifstream in(path, std::ios::binary);
  check_arg(static_cast<bool>(in), "{}: cannot open", path);
  if (size < 8) throw not_safetensors(path, fmt::format("{} bytes, shorter than the 8-byte header length", size));
  char first8[8];
  in.read(first8, 8);
  check_arg(in.gcount() == 8, "{}: read {} of 8 bytes", path, in.gcount());
  const int64_t n = header_length(first8, size - 8, path);
  std::string text(static_cast<size_t>(n), '\0');
  in.read(text.data(), n);
  check_arg(in.gcount() == n, "{}: read {} of the header's {} bytes", path, in.gcount(), n);
  Safetensors out = parse_header(text, static_cast<int64_t>(size - 8) - n, path);
  out.source = path;
  out.data_start = 8 + n;
  out.source_bytes = static_cast<int64_t>(size);
  return out;
}

void read_entry_bytes(const Safetensors& file, const SafetensorsEntry& e, void* dst) {
  const int64_t n = e.end - e.begin;
  if (n == 0) return;
  if (file.source.empty()) {
    std::memcpy(dst, file.data.data() + e.begin, static_cast<size_t>(n));
    return;
  }
  // Read where it lies; a file changed since its header was read is an error, not a silent mix.
  check_arg(regular_file_size(file.source) == static_cast<uintmax_t>(file.source_bytes),
            "{}: the file changed size while being read", file.source);
  std::ifstream in(file.source, std::ios::binary);
  check_arg(static_cast<bool>(in), "{}: cannot open", file.source);
  in.seekg(file.data_start + e.begin);
  in.read(static_cast<char*>(dst), n);
  check_arg(in.gcount() == n, "{}: read {} of tensor '{}''s {} bytes", file.source, in.gcount(), e.name, n);
}

void copy_from_safetensors(const Safetensors& file, const std::string& what, const std::string& name,
                           const Tensor& dst) {
  const SafetensorsEntry* e = file.find(name);
  check_arg(e != nullptr, "{}: no tensor '{}'", what, name);
  check_arg(e->dtype == dst.dtype(), "{}: tensor '{}' is {}, expected {}", what, name, dtype_name(e->dtype),
            dtype_name(dst.dtype()));
  check_arg(e->shape == dst.shape(), "{}: tensor '{}' has shape [{}], expected [{}]", what, name,
            fmt::join(e->shape, ", "), fmt::join(dst.shape(), ", "));
  check_arg(dst.is_contiguous(), "{}: destination of '{}' is not contiguous", what, name);
  read_entry_bytes(file, *e, dst.raw_data());
}

}  // namespace reckon
