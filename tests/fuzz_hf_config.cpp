// A seeded random fuzzer of the Hugging Face config.json loader (parse_hf_config_text: depth pre-scan, nlohmann's
// parser, the key mapping and its refusals, then validate). Every input must load or be refused with
// std::invalid_argument: no other exception, no crash, no sanitizer report. Inputs are mutations of released
// configs (byte flips, JSON tokens, deletions, long repetitions of brackets and quotes, key = value insertions with
// known and unknown keys and wrong types) and generated nonsense.
//
//   build/fuzz_hf_config                      # the short pass ctest runs (3,000 inputs)
//   build/fuzz_hf_config 100000 7             # a longer run: 10^5 inputs from seed 7 (use the sanitizer build)
// A failure prints its seed and input index; rerun with that seed to reproduce.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz_main.h"

#include "model/hf_config.h"

namespace {

const std::vector<std::string> kSeeds = {
    R"({"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
        "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": true})",
    R"({"model_type": "mistral", "architectures": ["MistralForCausalLM"], "vocab_size": 320, "hidden_size": 32,
        "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
        "max_position_embeddings": 16, "sliding_window": null, "bos_token_id": 1})",
    R"({"model_type": "phi3", "vocab_size": 100, "hidden_size": 48, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 3, "max_position_embeddings": 8, "sliding_window": 2047,
        "rope_scaling": null, "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0})",
    R"({"model_type": "qwen2", "hidden_size": 896})",
    R"({"model_type": "mixtral", "num_local_experts": 8})",
    R"([1, 2, {"a": [3]}])",
};

const std::vector<std::string> kTokens = {
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "false",
    "-0",
    "1e309",
    "9223372036854775808",
    "18446744073709551616",
    "-1",
    "0.5",
    "4096",
    "\"silu\"",
    "\"gelu\"",
    "\"llama\"",
    "\"model_type\"",
    "\"hidden_size\"",
    "\"head_dim\"",
    "\xff",
    "\xc3",
    std::string(1, '\0'),
    "\n",
    " ",
    "NaN",
};

std::string mutate(std::mt19937_64& rng, std::string s) {
  auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = rng() % 3 == 0 ? 1 : 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 6) {
      case 0:  // flip a byte
        if (!s.empty()) s[below(s.size())] = static_cast<char>(rng() & 0xff);
        break;
      case 1:  // insert a JSON token
        s.insert(below(s.size() + 1), kTokens[below(kTokens.size())]);
        break;
      case 2:  // delete a range
        if (!s.empty()) {
          const size_t at = below(s.size());
          s.erase(at, below(s.size() - at + 1));
        }
        break;
      case 3: {  // a long repetition of a bracket or quote (deep nesting)
        const std::string& t = kTokens[below(7)];
        const size_t n = 1 + below(rng() % 4 == 0 ? 200000 : 64);
        std::string rep;
        rep.reserve(t.size() * n);
        for (size_t i = 0; i < n; ++i) rep += t;
        s.insert(below(s.size() + 1), rep);
        break;
      }
      case 4: {  // a "key": value pair after the opening brace, known keys with any value
        static const std::vector<std::string> keys = {"vocab_size",
                                                      "hidden_size",
                                                      "intermediate_size",
                                                      "num_hidden_layers",
                                                      "num_attention_heads",
                                                      "num_key_value_heads",
                                                      "head_dim",
                                                      "max_position_embeddings",
                                                      "rope_theta",
                                                      "rms_norm_eps",
                                                      "tie_word_embeddings",
                                                      "sliding_window",
                                                      "use_sliding_window",
                                                      "hidden_act",
                                                      "attention_bias",
                                                      "rope_scaling",
                                                      "model_type",
                                                      "torch_dtype",
                                                      "unknown_key"};
        const size_t brace = s.find('{');
        const std::string pair = "\"" + keys[below(keys.size())] + "\": " + kTokens[below(kTokens.size())] + ", ";
        s.insert(brace == std::string::npos ? 0 : brace + 1, pair);
        break;
      }
      default:  // duplicate a slice
        if (!s.empty()) {
          const size_t at = below(s.size());
          s.insert(below(s.size() + 1), s.substr(at, below(64)));
        }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  return testing_ref::run_fuzzer(
      "fuzz_hf_config", argc, argv, 3000, 20261202ULL, "loaded",
      [](std::mt19937_64& rng) {
        return rng() % 10 == 0 ? mutate(rng, "") : mutate(rng, kSeeds[rng() % kSeeds.size()]);
      },
      [](const std::string& input) { reckon::validate(reckon::parse_hf_config_text(input, "fuzz.json").config); });
}
