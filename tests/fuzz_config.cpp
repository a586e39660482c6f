// A seeded random fuzzer of the config loader (parse_config_text: pre-scan, toml++, strict keys and types,
// then validate). Every input must load or be refused with std::invalid_argument: no other exception, no crash,
// no sanitizer report. Inputs are mutations of valid configs (byte flips, insertions of TOML structure,
// splices, huge repetitions of brackets, dots, quotes and escapes) and generated nonsense.
//
//   build/fuzz_config                         # the short pass ctest runs (3,000 inputs)
//   build/fuzz_config 100000 7                # a longer run: 10^5 inputs from seed 7 (use the sanitizer build)
// A failure prints its seed and input index; rerun with that seed to reproduce.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz_main.h"

#include "model/config.h"

namespace {

const std::vector<std::string> kSeeds = {
    "preset = \"S\"\nnum_layers = 2\n[model]\nffn = \"silu_mlp\"\ntie_embeddings = true\n[optim]\nlr = 0.002\n",
    "d_model = 128\nnum_heads = 4\nbatch_size = 2\nseed = 7\n",
    "[model]\nvocab_size = 512\ncontext_length = 64\nposition = 'learned'\nnorm_eps = 1e-6\n",
    "preset = 'tiny' # comment\n[optim]\nbeta1 = 0.8\nbeta2 = 0.95\nadam_eps = 1e-8\nweight_decay = 0.1\n",
    "x = \"\"\"multi\nline\"\"\"\n",
    "a = { b = 1, c = [1, 2, [3]] }\n",
    "[[array.of.tables]]\nkey = 1\n",
};

const std::vector<std::string> kTokens = {
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ".",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "\\",
    "\\u00e9",
    "\n",
    "#",
    ",",
    " ",
    "preset",
    "model",
    "optim",
    "d_model",
    "num_heads",
    "1e309",
    "-0",
    "nan",
    "inf",
    "0x7f",
    "1979-05-27T07:32:00Z",
    "true",
    "false",
    "9223372036854775808",
    "\xff",
    "\xc3",
    std::string(1, '\0'),
    "\r\n",
    "\t",
    "a.b.c",
};

std::string mutate(std::mt19937_64& rng, std::string s) {
  // TOML's own edits: splice another seed in; a key = value line with a random known or near-known key.
  return testing_ref::mutate_text(rng, std::move(s), kTokens, 12, 2, [](std::mt19937_64& r, std::string& text, int k) {
    auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(r() % n); };
    if (k == 0) {
      const std::string& other = kSeeds[below(kSeeds.size())];
      const size_t from = below(other.size());
      text.insert(below(text.size() + 1), other.substr(from, below(other.size() - from + 1)));
      return;
    }
    static const std::vector<std::string> keys = {
        "vocab_size",     "context_length", "num_layers", "d_model",  "num_heads", "d_ff",  "ffn",
        "tie_embeddings", "position",       "batch_size", "norm_eps", "lr",        "beta1", "beta2",
        "adam_eps",       "weight_decay",   "seed",       "preset",   "d_modle"};
    text += "\n" + keys[below(keys.size())] + " = " + kTokens[below(kTokens.size())] + "\n";
  });
}

}  // namespace

int main(int argc, char** argv) {
  return testing_ref::run_fuzzer(
      "fuzz_config", argc, argv, 3000, 20261126ULL, "loaded",
      [](std::mt19937_64& rng) {
        return rng() % 10 == 0 ? mutate(rng, "") : mutate(rng, kSeeds[rng() % kSeeds.size()]);
      },
      [](const std::string& input) { reckon::validate(reckon::parse_config_text(input, "fuzz.toml")); });
}
