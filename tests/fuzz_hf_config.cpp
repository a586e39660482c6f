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
    R"({"model_type": "gpt2", "vocab_size": 300, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 16,
        "n_ctx": 16, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "resid_pdrop": 0.1,
        "attn_pdrop": 0.1, "n_inner": null, "summary_type": "cls_index"})",
    R"({"model_type": "falcon", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "multi_query": true, "new_decoder_architecture": false, "parallel_attn": true,
        "bias": false, "alibi": false, "layer_norm_epsilon": 1e-05, "apply_residual_connection_post_layernorm": false})",
    R"({"model_type": "gemma2", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 16,
        "sliding_window": 8, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "hidden_activation": "gelu_pytorch_tanh", "cache_implementation": "hybrid"})",
    R"({"model_type": "olmo2", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 16, "rope_theta": 500000,
        "rms_norm_eps": 1e-06, "attention_bias": false})",
    R"({"model_type": "mpt", "d_model": 32, "n_heads": 4, "n_layers": 2, "vocab_size": 300, "max_seq_len": 16,
        "expansion_ratio": 4, "no_bias": true, "learned_pos_emb": true, "norm_type": "low_precision_layernorm",
        "attn_config": {"alibi": true, "alibi_bias_max": 8, "attn_type": "multihead_attention", "clip_qkv": null,
        "softmax_scale": null, "qk_ln": false, "attn_pdrop": 0.1}, "init_config": {"name": "kaiming_normal_"}})",
    R"({"model_type": "mixtral", "num_local_experts": 8})",
    R"([1, 2, {"a": [3]}])",
};

const std::vector<std::string> kTokens = testing_ref::json_tokens({
    "1e309",
    "9223372036854775808",
    "18446744073709551616",
    "-1",
    "0.5",
    "4096",
    "\"silu\"",
    "\"gelu\"",
    "\"gelu_new\"",
    "\"gpt2\"",
    "\"falcon\"",
    "\"gemma2\"",
    "\"olmo2\"",
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
});

std::string mutate(std::mt19937_64& rng, std::string s) {
  // The JSON's own edit: a "key": value pair after the opening brace, known keys with any value.
  return testing_ref::mutate_text(rng, std::move(s), kTokens, 7, 1, [](std::mt19937_64& r, std::string& text, int) {
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
                                                  "layer_types",
                                                  "hidden_act",
                                                  "mlp_bias",
                                                  "n_embd",
                                                  "n_layer",
                                                  "n_head",
                                                  "n_inner",
                                                  "n_positions",
                                                  "activation_function",
                                                  "layer_norm_epsilon",
                                                  "scale_attn_weights",
                                                  "attn_pdrop",
                                                  "query_pre_attn_scalar",
                                                  "hidden_activation",
                                                  "attn_logit_softcapping",
                                                  "final_logit_softcapping",
                                                  "multi_query",
                                                  "parallel_attn",
                                                  "new_decoder_architecture",
                                                  "alibi",
                                                  "alibi_bias_max",
                                                  "attn_config",
                                                  "expansion_ratio",
                                                  "no_bias",
                                                  "softmax_scale",
                                                  "bias",
                                                  "ffn_hidden_size",
                                                  "activation",
                                                  "attention_bias",
                                                  "rope_scaling",
                                                  "model_type",
                                                  "torch_dtype",
                                                  "unknown_key"};
    const size_t brace = text.find('{');
    const std::string pair = "\"" + keys[r() % keys.size()] + "\": " + kTokens[r() % kTokens.size()] + ", ";
    text.insert(brace == std::string::npos ? 0 : brace + 1, pair);
  });
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
