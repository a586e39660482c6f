// runtime/safetensors: what reckon writes reads back bit for bit (float32, bfloat16, int32, metadata) and follows
// the format (an independent byte-level check of the header); every malformed or hostile file is one clear
// std::invalid_argument naming the file and the problem, never a crash (the fuzzer, tests/fuzz_safetensors.cpp,
// covers the space between these cases).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/bf16.h"
#include "runtime/safetensors.h"

namespace reckon {
namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
// A file with this header text and `data_bytes` zero bytes of data.
std::string file_with(const std::string& header, size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripIsBitExactAndFollowsTheFormat) {
  Tensor w = Tensor::empty({2, 3}, Category::temporary, "w");
  for (int64_t i = 0; i < 6; ++i) w.data()[i] = 1.0f / static_cast<float>(i + 3);
  Tensor g = Tensor::empty({4}, Category::temporary, "g", DType::bf16);
  for (int64_t i = 0; i < 4; ++i) g.data_bf16()[i] = to_bf16(-2.5f * static_cast<float>(i));
  Tensor ids = Tensor::empty({1, 2}, Category::temporary, "ids", DType::i32);
  ids.data_i32()[0] = -7, ids.data_i32()[1] = 2147483647;
  const std::string bytes =
      serialize_safetensors({{"w", w}, {"g", g}, {"ids", ids}}, {{"step", "12"}, {"format", "pt"}});

  // The format, read by hand: header length, JSON, then 24 + 8 + 8 data bytes in the order given.
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[static_cast<size_t>(i)])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 24 + 8 + 8);
  const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["w"]["dtype"], "F32");
  EXPECT_EQ(h["w"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(h["w"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(h["g"]["dtype"], "BF16");
  EXPECT_EQ(h["g"]["data_offsets"], nlohmann::json({24, 32}));
  EXPECT_EQ(h["ids"]["dtype"], "I32");
  EXPECT_EQ(h["__metadata__"]["step"], "12");
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, w.raw_data(), 24), 0);

  const Safetensors file = parse_safetensors(bytes, "t.safetensors");
  EXPECT_EQ(file.metadata.at("format"), "pt");
  ASSERT_EQ(file.tensors.size(), 3u);
  Tensor w2 = Tensor::empty({2, 3}, Category::temporary, "w2");
  Tensor g2 = Tensor::empty({4}, Category::temporary, "g2", DType::bf16);
  Tensor ids2 = Tensor::empty({1, 2}, Category::temporary, "ids2", DType::i32);
  copy_from_safetensors(file, "t", "w", w2);
  copy_from_safetensors(file, "t", "g", g2);
  copy_from_safetensors(file, "t", "ids", ids2);
  EXPECT_EQ(std::memcmp(w2.raw_data(), w.raw_data(), 24), 0);
  EXPECT_EQ(std::memcmp(g2.raw_data(), g.raw_data(), 8), 0);
  EXPECT_EQ(std::memcmp(ids2.raw_data(), ids.raw_data(), 8), 0);

  // The destination must match: dtype, shape, presence.
  auto message = [&](const Tensor& dst, const std::string& name) {
    try {
      copy_from_safetensors(file, "t.safetensors", name, dst);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message(Tensor::empty({2, 3}, Category::temporary, "x", DType::bf16), "w"),
            "t.safetensors: tensor 'w' is float32, expected bfloat16");
  EXPECT_EQ(message(Tensor::empty({3, 2}, Category::temporary, "x"), "w"),
            "t.safetensors: tensor 'w' has shape [2, 3], expected [3, 2]");
  EXPECT_EQ(message(w2, "nope"), "t.safetensors: no tensor 'nope'");
}

TEST(Safetensors, MalformedAndHostileFilesAreClearErrors) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  struct Case {
    std::string bytes;
    std::string expect;  // a fragment of the message
  };
  const std::vector<Case> cases = {
      {"", "0 bytes, shorter than the 8-byte header length"},
      {std::string("\x05\x00\x00", 3), "3 bytes"},
      {le64(uint64_t{1} << 63) + ok, "header length 9223372036854775808 exceeds"},
      {le64(~uint64_t{0}) + ok, "header length 18446744073709551615 exceeds"},
      {le64(ok.size() + 1) + ok, "exceeds the"},
      {le64(200ull << 20) + std::string(16, ' '), "exceeds"},
      {file_with(std::string(10, '[') + std::string(10, ']'), 0), "nests deeper than 4 levels"},
      {file_with("{\"a\":", 0), "the header is not JSON"},
      {file_with("[1,2]", 0), "the header is not a JSON object"},
      {file_with(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4),
       "dtype 'F16' is not one reckon reads"},
      {file_with(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "a dimension must be an integer"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), "a dimension must be an integer"},
      {file_with(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "needs 12 bytes, data_offsets give 8"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})", 8), "outside the 8 data bytes"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "outside the 8 data bytes"},
      {file_with(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       "element count does not fit int64"},
      {file_with(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           8),
       "tensor 'b' starts at byte 4, expected 8"},
      {file_with(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       "tensor 'a' starts at byte 4, expected 0"},
      {file_with(ok, 12), "12 data bytes, the entries cover 8"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "exactly dtype, shape and data_offsets"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8),
       "exactly dtype, shape and data_offsets"},
      {file_with(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "data_offsets must be [begin, end]"},
      {file_with(R"({"__metadata__":{"step":3}})", 0), "__metadata__['step'] must be a string"},
      {file_with(R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "a tensor with an empty name"},
  };
  for (const Case& c : cases) {
    try {
      parse_safetensors(c.bytes, "bad.safetensors");
      ADD_FAILURE() << "accepted: " << c.expect;
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("bad.safetensors: not a valid safetensors file: "), std::string::npos) << what;
      EXPECT_NE(what.find(c.expect), std::string::npos) << what;
    }
  }
  // The writer refuses what it could not write validly.
  Tensor t = Tensor::zeros({2}, Category::temporary, "t");
  EXPECT_THROW(serialize_safetensors({{"x", t}, {"x", t}}, {}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"__metadata__", t}}, {}), std::invalid_argument);
  EXPECT_THROW(serialize_safetensors({{"v", Tensor::zeros({2, 3}, Category::temporary, "m").transpose(0, 1)}}, {}),
               std::invalid_argument);
}

// open_safetensors reads the header only (a resumed or --init-from file is never held whole, so the memory guard
// runs before its bytes are read); each tensor is read from the file straight into its destination, and a file
// that changed size since is an error naming it; hostile headers fail as in memory.
TEST(Safetensors, OpenedFilesAreReadTensorByTensor) {
  Tensor w = Tensor::empty({3, 5}, Category::temporary, "w");
  for (int64_t i = 0; i < 15; ++i) w.data()[i] = 0.25f * static_cast<float>(i) - 1.0f;
  Tensor ids = Tensor::empty({2}, Category::temporary, "ids", DType::i32);
  ids.data_i32()[0] = 11, ids.data_i32()[1] = -3;
  const std::string bytes = serialize_safetensors({{"w", w}, {"ids", ids}}, {{"steps", "7"}});
  const std::string path = ::testing::TempDir() + "opened.safetensors";
  std::ofstream(path, std::ios::binary) << bytes;
  const Safetensors file = open_safetensors(path);
  EXPECT_TRUE(file.data.empty());
  EXPECT_EQ(file.source, path);
  EXPECT_EQ(file.source_bytes, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(file.metadata.at("steps"), "7");
  Tensor w2 = Tensor::empty({3, 5}, Category::temporary, "w2");
  Tensor ids2 = Tensor::empty({2}, Category::temporary, "ids2", DType::i32);
  copy_from_safetensors(file, path, "w", w2);
  copy_from_safetensors(file, path, "ids", ids2);
  EXPECT_EQ(std::memcmp(w2.raw_data(), w.raw_data(), 60), 0);
  EXPECT_EQ(std::memcmp(ids2.raw_data(), ids.raw_data(), 8), 0);
  std::ofstream(path, std::ios::binary | std::ios::app) << "xx";  // replaced under the reader
  try {
    copy_from_safetensors(file, path, "w", w2);
    FAIL() << "read a file that changed";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), path + ": the file changed size while being read");
  }
  // The same header checks as in memory: a header length past the end, a short file, a directory.
  std::ofstream(path, std::ios::binary | std::ios::trunc) << le64(1000) << "{}";
  EXPECT_THROW(open_safetensors(path), std::invalid_argument);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "abc";
  EXPECT_THROW(open_safetensors(path), std::invalid_argument);
  EXPECT_THROW(open_safetensors(::testing::TempDir()), std::invalid_argument);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace reckon
