// A seeded random fuzzer of the safetensors reader (runtime/safetensors.h: parse_safetensors, then a copy of
// every entry it accepts). Every input must parse or be refused with std::invalid_argument: no other exception,
// no crash, no sanitizer report. Inputs are mutations of valid files written by serialize_safetensors (byte
// flips, header-length rewrites up to 2⁶³ and beyond the file, truncations, edits inside the JSON header:
// numbers, dtypes, offsets, nesting, duplicated and swapped entries) and generated nonsense.
//
//   build/fuzz_safetensors                       # the pass ctest runs (20,000 inputs by default; ctest asks 10^5)
//   build-asan/fuzz_safetensors 100000 7         # 10^5 inputs from seed 7 under ASan + UBSan
// A failure prints its seed and input index; rerun with that seed to reproduce.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz_main.h"

#include "runtime/safetensors.h"

namespace {

using namespace reckon;

std::vector<std::string> seeds() {
  Tensor a = Tensor::empty({3, 4}, Category::temporary, "a");
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = 0.5f * static_cast<float>(i);
  Tensor b = Tensor::zeros({5}, Category::temporary, "b", DType::bf16);
  Tensor c = Tensor::zeros({2, 1, 2}, Category::temporary, "c", DType::i32);
  // An empty tensor (a zero dimension: valid safetensors, which reckon's tensors never are) by hand.
  const std::string empty_header = R"({"empty":{"dtype":"F32","shape":[0,7],"data_offsets":[0,0]}})";
  std::string with_empty(8, '\0');
  with_empty[0] = static_cast<char>(empty_header.size());
  with_empty += empty_header;
  return {serialize_safetensors({{"layers.0.w", a}, {"bias", b}, {"ids", c}}, {{"step", "3"}, {"config", "x = 1"}}),
          serialize_safetensors({{"only", a}}, {}), with_empty, serialize_safetensors({}, {})};
}

const std::vector<std::string> kTokens = {
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "0",
    "-1",
    "1e3",
    "18446744073709551616",
    "9223372036854775807",
    "\"F32\"",
    "\"BF16\"",
    "\"I32\"",
    "\"F16\"",
    "\"dtype\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"__metadata__\"",
    "null",
    "true",
    "[0,0]",
    "[0,48]",
    "[48,0]",
    "[4611686018427387904,4611686018427387904]",
    "\\u0000",
    " ",
};

std::string mutate(std::mt19937_64& rng, std::string s) {
  auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = rng() % 3 == 0 ? 1 : 1 + static_cast<int>(rng() % 6);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 7) {
      case 0:  // flip a byte (often in the header length or the JSON)
        if (!s.empty())
          s[below(std::min<size_t>(s.size(), rng() % 2 ? 16 : s.size()))] = static_cast<char>(rng() & 0xff);
        break;
      case 1: {  // rewrite the header length: 0, huge, 2^63, off by a little
        if (s.size() < 8) break;
        uint64_t n = 0;
        for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
        const uint64_t choices[] = {0, 1, n - 1, n + 1, n + 8, uint64_t{1} << 63, ~uint64_t{0}, s.size(), rng()};
        n = choices[below(9)];
        for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
        break;
      }
      case 2:  // truncate
        s.resize(below(s.size() + 1));
        break;
      case 3: {  // insert a JSON token into the header region
        const size_t end = std::min<size_t>(s.size(), 200);
        s.insert(below(end + 1), kTokens[below(kTokens.size())]);
        break;
      }
      case 4:  // replace a digit run in the header by another number
        for (size_t i = 8 + below(s.size()); i < s.size(); ++i) {
          if (s[i] >= '0' && s[i] <= '9') {
            size_t j = i;
            while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
            s.replace(i, j - i, std::to_string(rng() % 4 == 0 ? rng() : rng() % 64));
            break;
          }
        }
        break;
      case 5: {  // deep nesting
        const size_t n = 1 + below(rng() % 4 == 0 ? 100000 : 16);
        s.insert(below(std::min<size_t>(s.size(), 100) + 1), std::string(n, rng() % 2 ? '[' : '{'));
        break;
      }
      default:  // append or duplicate bytes
        if (!s.empty()) s += s.substr(below(s.size()), below(64));
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> valid = seeds();
  return testing_ref::run_fuzzer(
      "fuzz_safetensors", argc, argv, 20000, 20261126ULL, "parsed",
      [&](std::mt19937_64& rng) {
        return rng() % 20 == 0 ? mutate(rng, std::string(8, '\0')) : mutate(rng, valid[rng() % valid.size()]);
      },
      [](const std::string& input) {
        const Safetensors file = parse_safetensors(input, "fuzz.safetensors");
        for (const SafetensorsEntry& e : file.tensors) {  // what a loader does next: copy each entry out
          bool holdable = !e.shape.empty();
          for (int64_t dim : e.shape) holdable = holdable && dim >= 1;
          if (!holdable) continue;  // reckon's tensors have no zero or missing dimensions
          Tensor t = Tensor::empty(e.shape, Category::temporary, "fuzz", e.dtype);
          copy_from_safetensors(file, "fuzz.safetensors", e.name, t);
        }
      });
}
