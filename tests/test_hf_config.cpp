// model/hf_config: released config.json files (the architecture fields of each model's file, as in
// shared/model_configs, embedded so the test needs no checkout beside this one) load to their published parameter
// counts exactly — the model cards' totals (shared/model_configs/README.md); the families reckon does not model yet
// are refused naming what they need; bad files are refused naming the key; HF's defaults for absent keys.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "model/hf_config.h"
#include "model/layout.h"
#include "tests/param_count_oracle.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using testing_ref::expect_invalid;

const std::map<std::string, std::string> kReleased = {
    {"llama-2-7b",
     R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096, "tie_word_embeddings": false, "rope_scaling": null, "rms_norm_eps": 1e-05, "hidden_act": "silu", "pretraining_tp": 1})"},
    {"llama-2-70b",
     R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 4096, "tie_word_embeddings": false, "rope_scaling": null, "rms_norm_eps": 1e-05, "hidden_act": "silu", "pretraining_tp": 1})"},
    {"llama-3-8b",
     R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192, "tie_word_embeddings": false, "rope_theta": 500000.0, "rope_scaling": null, "rms_norm_eps": 1e-05, "hidden_act": "silu", "attention_bias": false})"},
    {"mistral-7b-v0.1",
     R"({"model_type": "mistral", "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768, "tie_word_embeddings": false, "rope_theta": 10000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu", "sliding_window": 4096})"},
    {"smollm2-135m",
     R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "tie_word_embeddings": true, "rope_theta": 100000, "rope_scaling": null, "rms_norm_eps": 1e-05, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false})"},
    {"qwen2.5-0.5b",
     R"({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768, "tie_word_embeddings": true, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "hidden_act": "silu", "use_sliding_window": false, "sliding_window": 32768})"},
    {"qwen2.5-7b",
     R"({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 131072, "tie_word_embeddings": false, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "hidden_act": "silu", "use_sliding_window": false, "sliding_window": 131072})"},
    {"gemma-2-2b",
     R"({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192, "rope_theta": 10000.0, "rms_norm_eps": 1e-06, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0})"},
    {"gpt2",
     R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_ctx": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05})"},
    {"gpt2-medium",
     R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257, "n_embd": 1024, "n_layer": 24, "n_head": 16, "n_positions": 1024, "n_ctx": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05})"},
    {"olmo-2-1124-7b", R"({"model_type": "olmo2", "architectures": ["Olmo2ForCausalLM"], "vocab_size": 100352, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096, "tie_word_embeddings": false, "rope_theta": 500000, "rope_scaling": null, "rms_norm_eps": 1e-06, "hidden_act": "silu", "attention_bias": false})"},
    {"falcon-7b",
     R"({"model_type": "falcon", "architectures": ["FalconForCausalLM"], "vocab_size": 65024, "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71, "multi_query": true, "new_decoder_architecture": false, "parallel_attn": true, "bias": false, "alibi": false, "layer_norm_epsilon": 1e-05, "apply_residual_connection_post_layernorm": false})"},
    // MPT-7B's config.json (mosaicml/mpt-7b, as released: its attn_config and init_config objects included).
    {"mpt-7b",
     R"({"model_type": "mpt", "architectures": ["MPTForCausalLM"], "attn_config": {"alibi": true, "alibi_bias_max": 8, "attn_impl": "torch", "attn_pdrop": 0, "attn_type": "multihead_attention", "attn_uses_sequence_id": false, "clip_qkv": null, "prefix_lm": false, "qk_ln": false, "softmax_scale": null}, "d_model": 4096, "emb_pdrop": 0, "embedding_fraction": 1.0, "expansion_ratio": 4, "init_config": {"emb_init_std": null, "emb_init_uniform_lim": null, "fan_mode": "fan_in", "init_div_is_residual": true, "init_gain": 0, "init_nonlinearity": "relu", "init_std": 0.02, "name": "kaiming_normal_", "verbose": 0}, "init_device": "cpu", "learned_pos_emb": true, "logit_scale": null, "max_seq_len": 2048, "n_heads": 32, "n_layers": 32, "no_bias": true, "norm_type": "low_precision_layernorm", "resid_pdrop": 0, "tokenizer_name": "EleutherAI/gpt-neox-20b", "use_cache": false, "verbose": 0, "vocab_size": 50432})"},
    {"mixtral-8x7b-v0.1",
     R"({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768, "tie_word_embeddings": false, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu", "sliding_window": null, "num_local_experts": 8, "num_experts_per_tok": 2})"},
};

TEST(HfConfig, ReleasedConfigsGiveTheirPublishedCounts) {
  // Published totals (model cards; shared/model_configs/README.md).
  const std::map<std::string, int64_t> published = {{"llama-2-7b", 6738415616LL},  {"llama-2-70b", 68976648192LL},
                                                    {"llama-3-8b", 8030261248LL},  {"mistral-7b-v0.1", 7241732096LL},
                                                    {"smollm2-135m", 134515008LL}, {"qwen2.5-0.5b", 494032768LL},
                                                    {"qwen2.5-7b", 7615616512LL}};
  for (const auto& [name, count] : published) {
    SCOPED_TRACE(name);
    const HfConfig hf = parse_hf_config_text(kReleased.at(name), name);
    EXPECT_EQ(parameter_layout(hf.config.model).total(), count);
    EXPECT_EQ(testing_ref::count_parameters(hf.config.model), count);
    EXPECT_EQ(hf.config.model.position, Position::rope);
    EXPECT_EQ(hf.config.model.ffn, FfnKind::swiglu);
  }
  // GPT-2 (published: 124,439,808 and 354,823,168): LayerNorm with β, biases on every linear, the tanh GELU MLP at
  // 4·n_embd (no n_inner key), learned positions, the head tied without a key.
  for (const auto& [name, count] :
       std::map<std::string, int64_t>{{"gpt2", 124439808LL}, {"gpt2-medium", 354823168LL}}) {
    SCOPED_TRACE(name);
    const HfConfig hf = parse_hf_config_text(kReleased.at(name), name);
    const ModelConfig& m = hf.config.model;
    EXPECT_EQ(parameter_layout(m).total(), count);
    EXPECT_EQ(testing_ref::count_parameters(m), count);
    EXPECT_EQ(m.position, Position::learned);
    EXPECT_EQ(m.ffn, FfnKind::gelu_tanh_mlp);
    EXPECT_EQ(m.d_ff, 4 * m.d_model);
    EXPECT_EQ(m.norm, NormKind::layernorm);
    EXPECT_TRUE(m.norm_bias && m.mlp_bias && m.tie_embeddings);
    EXPECT_EQ(m.attention_bias, AttentionBias::qkvo);
    EXPECT_EQ(hf.ignored, (std::vector<std::string>{"architectures", "n_ctx"}));
    EXPECT_TRUE(hf.left_out.empty());
  }
  // Falcon-7B (published: 6,921,720,704): one K/V head (multi_query), a parallel block from one LayerNorm with β, the
  // exact GELU MLP at 4·D, no linear biases, RoPE, tied without a key, FalconConfig's 2048 positions.
  {
    const HfConfig hf = parse_hf_config_text(kReleased.at("falcon-7b"), "falcon");
    const ModelConfig& m = hf.config.model;
    EXPECT_EQ(parameter_layout(m).total(), 6921720704LL);
    EXPECT_EQ(testing_ref::count_parameters(m), 6921720704LL);
    EXPECT_EQ(m.kv_heads(), 1);
    EXPECT_EQ(m.block, Block::parallel);
    EXPECT_EQ(m.ffn, FfnKind::gelu_mlp);
    EXPECT_EQ(m.d_ff, 4 * 4544);
    EXPECT_EQ(m.context_length, 2048);
    EXPECT_EQ(m.position, Position::rope);
    EXPECT_TRUE(m.tie_embeddings && m.norm_bias);
    EXPECT_EQ(m.attention_bias, AttentionBias::none);
    EXPECT_FALSE(m.mlp_bias);
    // parallel_attn false: a sequential pre-norm block (two LayerNorms a layer); bias true: biases on every linear
    // (query_key_value, dense, dense_h_to_4h, dense_4h_to_h); multi_query false: as many K/V heads as query heads.
    std::string seq = kReleased.at("falcon-7b");
    for (const auto& [from, to] :
         std::vector<std::pair<std::string, std::string>>{{"\"parallel_attn\": true", "\"parallel_attn\": false"},
                                                          {"\"bias\": false", "\"bias\": true"},
                                                          {"\"multi_query\": true", "\"multi_query\": false"}}) {
      seq.replace(seq.find(from), from.size(), to);
    }
    const ModelConfig s = parse_hf_config_text(seq, "falcon-seq").config.model;
    EXPECT_EQ(s.block, Block::sequential);
    EXPECT_EQ(s.kv_heads(), 71);
    const int64_t d = 4544, l = 32;
    EXPECT_EQ(parameter_layout(s).total(), 6921720704LL + l * (2 * d) /* ffn LayerNorm */ +
                                               l * (2 * d * (d - 64)) /* 70 more K/V heads */ +
                                               l * (3 * d + d + 4 * d + d) /* biases: q, k, v; o; w1; w2 */);
  }
  // OLMo-2 7B (published: 7,298,617,344): LLaMA's keys, RMSNorms after each sublayer and over the q and k projections.
  {
    const ModelConfig m = parse_hf_config_text(kReleased.at("olmo-2-1124-7b"), "olmo").config.model;
    EXPECT_EQ(parameter_layout(m).total(), 7298617344LL);
    EXPECT_EQ(testing_ref::count_parameters(m), 7298617344LL);
    EXPECT_EQ(m.norm_placement, NormPlacement::post);
    EXPECT_TRUE(m.qk_norm);
    EXPECT_EQ(m.norm_eps, 1e-6);
    EXPECT_EQ(m.rope_theta, 500000.0);
  }
  // Gemma-2 2B (published: 2,614,341,888): 4 RMSNorms a layer scaling by 1 + w, embeddings × √2304 = 48, gated tanh
  // GELU, 8 heads of 256 with 4 K/V heads, the window on layers 0, 2, 4, …, both soft-caps, tied without a key.
  {
    const HfConfig hf = parse_hf_config_text(kReleased.at("gemma-2-2b"), "gemma");
    const ModelConfig& m = hf.config.model;
    EXPECT_EQ(parameter_layout(m).total(), 2614341888LL);
    EXPECT_EQ(testing_ref::count_parameters(m), 2614341888LL);
    EXPECT_EQ(m.norm_placement, NormPlacement::sandwich);
    EXPECT_TRUE(m.norm_unit_offset && m.scale_embeddings && m.tie_embeddings);
    EXPECT_EQ(m.embedding_scale(), 48.0f);
    EXPECT_EQ(m.ffn, FfnKind::geglu_tanh);
    EXPECT_EQ(m.head_size(), 256);
    EXPECT_EQ(m.kv_heads(), 4);
    EXPECT_EQ(m.layer_window(0), 4096);
    EXPECT_EQ(m.layer_window(1), 0);
    EXPECT_EQ(m.attn_logit_softcapping, 50.0);
    EXPECT_EQ(m.final_logit_softcapping, 30.0);
    // Gemma-2 27B's query_pre_attn_scalar (144, head_dim 128) scales the scores otherwise: refused, naming it.
    std::string big = kReleased.at("gemma-2-2b");
    const std::string from = "\"query_pre_attn_scalar\": 256";
    big.replace(big.find(from), from.size(), "\"query_pre_attn_scalar\": 144, \"head_dim\": 128");
    expect_invalid([&] { parse_hf_config_text(big, "g27"); }, {"query_pre_attn_scalar: 144", "head_dim 128"});
  }
  // MPT-7B (model card: "6.7B"; no exact published total, so the count is checked by arithmetic): ALiBi (no position
  // table), LayerNorm without β, no biases, the exact GELU MLP at 4·D, tied. L·(4·D² + 2·D·4D + 2·D) + V·D + D.
  {
    const HfConfig hf = parse_hf_config_text(kReleased.at("mpt-7b"), "mpt");
    const ModelConfig& m = hf.config.model;
    const int64_t d = 4096, l = 32, v = 50432;
    EXPECT_EQ(parameter_layout(m).total(), l * (4 * d * d + 2 * d * 4 * d + 2 * d) + v * d + d);
    EXPECT_EQ(parameter_layout(m).total(), 6649286656LL);
    EXPECT_EQ(testing_ref::count_parameters(m), 6649286656LL);
    EXPECT_EQ(m.position, Position::alibi);
    EXPECT_EQ(m.alibi_bias_max, 8.0);
    EXPECT_EQ(m.ffn, FfnKind::gelu_mlp);
    EXPECT_EQ(m.norm, NormKind::layernorm);
    EXPECT_FALSE(m.norm_bias || m.mlp_bias);
    EXPECT_EQ(m.attention_bias, AttentionBias::none);
    EXPECT_TRUE(m.tie_embeddings);
    EXPECT_EQ(m.context_length, 2048);
    EXPECT_EQ(hf.ignored, (std::vector<std::string>{"architectures", "init_config", "init_device", "learned_pos_emb",
                                                    "tokenizer_name", "use_cache", "verbose"}));
    EXPECT_EQ(m.attention_scores(0).alibi_bias_max, 8.0f);
    // What MPT's keys can say that reckon does not model: refused naming the key (nested ones with their object).
    auto edited = [](const std::string& from, const std::string& to) {
      std::string text = kReleased.at("mpt-7b");
      text.replace(text.find(from), from.size(), to);
      return text;
    };
    const std::vector<std::pair<std::string, std::vector<std::string>>> refusals = {
        {edited(R"("qk_ln": false)", R"("qk_ln": true)"), {"attn_config.qk_ln", "LayerNorm over q and k"}},
        {edited(R"("clip_qkv": null)", R"("clip_qkv": 8)"), {"attn_config.clip_qkv"}},
        {edited(R"("alibi": true)", R"("alibi": false)"), {"attn_config.alibi", "false"}},
        {edited(R"("attn_type": "multihead_attention")", R"("attn_type": "multiquery_attention")"),
         {"attn_config.attn_type", "multiquery_attention"}},
        {edited(R"("softmax_scale": null)", R"("softmax_scale": 0.5)"), {"attn_config.softmax_scale", "head_dim 128"}},
        {edited(R"("prefix_lm": false)", R"("prefix_lm": true)"), {"attn_config.prefix_lm"}},
        {edited(R"("alibi_bias_max": 8)", R"("alibi_bias_max": 8, "rope": 1)"), {"attn_config.rope", "does not know"}},
        {edited(R"("expansion_ratio": 4)", R"("expansion_ratio": 8)"), {"expansion_ratio", "8 is not 4"}},
        {edited(R"("no_bias": true)", R"("no_bias": false)"), {"no_bias", "false"}},
        {edited(R"("logit_scale": null)", R"("logit_scale": 2)"), {"logit_scale"}},
        {edited(R"("embedding_fraction": 1.0)", R"("embedding_fraction": 0.1)"), {"embedding_fraction"}},
        {edited(R"("low_precision_layernorm")", R"("rmsnorm")"), {"norm_type", "'rmsnorm'"}},
        {edited(R"("attn_config": {)", R"("attn_config": 7, "x": {)"), {"attn_config", "expected an object or null"}},
    };
    for (const auto& [text, needles] : refusals) {
      SCOPED_TRACE(needles.front());
      expect_invalid([&] { parse_hf_config_text(text, "mpt"); }, needles);
    }
    // Its own 1/sqrt(head_dim) written out is accepted; a steeper bias max is read; attention dropout is left out;
    // without attn_config, MptAttentionConfig's defaults (ALiBi, bias max 8).
    const HfConfig own =
        parse_hf_config_text(edited(R"("softmax_scale": null)", R"("softmax_scale": 0.08838834764831845)"), "mpt");
    EXPECT_EQ(own.config.model.position, Position::alibi);
    EXPECT_EQ(parse_hf_config_text(edited(R"("alibi_bias_max": 8)", R"("alibi_bias_max": 16)"), "m")
                  .config.model.alibi_bias_max,
              16.0);
    const HfConfig dropped = parse_hf_config_text(edited(R"("attn_pdrop": 0)", R"("attn_pdrop": 0.1)"), "m");
    ASSERT_EQ(dropped.left_out.size(), 1u);
    EXPECT_NE(dropped.left_out[0].find("attn_pdrop = 0.1 (dropout"), std::string::npos);
    const std::string bare =
        R"({"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 300, "max_seq_len": 32})";
    const ModelConfig b = parse_hf_config_text(bare, "bare").config.model;
    EXPECT_EQ(b.position, Position::alibi);
    EXPECT_EQ(b.alibi_bias_max, 8.0);
    EXPECT_EQ(b.d_ff, 256);
  }
  // GPT-2's exact GELU, an explicit n_inner, and the dropout its hub file sets: read, and listed as left out.
  std::string gpt2 = kReleased.at("gpt2");
  gpt2.insert(
      gpt2.rfind('}'),
      R"(, "activation_function": "gelu", "n_inner": 1000, "resid_pdrop": 0.1, "attn_pdrop": 0.1, "embd_pdrop": 0)");
  const HfConfig g = parse_hf_config_text(gpt2, "g");
  EXPECT_EQ(g.config.model.ffn, FfnKind::gelu_mlp);
  EXPECT_EQ(g.config.model.d_ff, 1000);
  ASSERT_EQ(g.left_out.size(), 2u);
  EXPECT_NE(g.left_out[0].find("resid_pdrop = 0.1 (dropout"), std::string::npos);
  EXPECT_NE(g.left_out[1].find("attn_pdrop = 0.1"), std::string::npos);
  // Qwen2: q, k, v biases always (no key), untied or tied; its windows only with use_sliding_window.
  const HfConfig qwen = parse_hf_config_text(kReleased.at("qwen2.5-0.5b"), "q");
  EXPECT_EQ(qwen.config.model.attention_bias, AttentionBias::qkv);
  EXPECT_TRUE(qwen.config.model.tie_embeddings);
  EXPECT_EQ(qwen.config.model.sliding_window, 0);
  std::string windowed = kReleased.at("qwen2.5-7b");
  const std::string off = "\"use_sliding_window\": false";
  windowed.replace(windowed.find(off), off.size(), "\"use_sliding_window\": true");
  expect_invalid([&] { parse_hf_config_text(windowed, "qw"); }, {"use_sliding_window", "max_window_layers"});
  // layer_types: all full (Qwen2 as newer transformers save it), every layer sliding, alternating (Gemma-2's), and
  // an irregular arrangement refused.
  auto with_types = [](std::string text, const std::string& types) {
    text.insert(text.rfind('}'), ", \"layer_types\": " + types);
    return text;
  };
  std::string full = "[", alternating = "[", irregular = "[", sliding = "[";
  for (int l = 0; l < 32; ++l) {
    const char* sep = l ? ", " : "";
    full += std::string(sep) + "\"full_attention\"";
    sliding += std::string(sep) + "\"sliding_attention\"";
    alternating += std::string(sep) + (l % 2 == 0 ? "\"sliding_attention\"" : "\"full_attention\"");
    irregular += std::string(sep) + (l == 5 ? "\"full_attention\"" : "\"sliding_attention\"");
  }
  for (std::string* s : {&full, &alternating, &irregular, &sliding}) *s += "]";
  const std::string mistral_text = kReleased.at("mistral-7b-v0.1");
  EXPECT_EQ(parse_hf_config_text(with_types(mistral_text, full), "m").config.model.sliding_window, 0);
  const ModelConfig alt = parse_hf_config_text(with_types(mistral_text, alternating), "m").config.model;
  EXPECT_EQ(alt.sliding_window_pattern, 2);
  EXPECT_EQ(alt.layer_window(0), 4096);
  EXPECT_EQ(alt.layer_window(1), 0);
  EXPECT_EQ(parse_hf_config_text(with_types(mistral_text, sliding), "m").config.model.sliding_window_pattern, 0);
  expect_invalid([&] { parse_hf_config_text(with_types(mistral_text, irregular), "m"); },
                 {"layer_types", "repeating pattern"});
  expect_invalid([&] { parse_hf_config_text(with_types(mistral_text, "[\"full_attention\"]"), "m"); },
                 {"layer_types", "32 entries"});
  // LLaMA's attention_bias = true: biases on q, k, v and o (4 more vectors a layer).
  std::string biased = kReleased.at("llama-2-7b");
  biased.insert(biased.rfind('}'), R"(, "attention_bias": true)");
  const HfConfig lb = parse_hf_config_text(biased, "lb");
  EXPECT_EQ(lb.config.model.attention_bias, AttentionBias::qkvo);
  EXPECT_EQ(parameter_layout(lb.config.model).total(), 6738415616LL + 32LL * 4 * 4096);
  const HfConfig l3 = parse_hf_config_text(kReleased.at("llama-3-8b"), "l3");
  EXPECT_EQ(l3.config.model.kv_heads(), 8);
  EXPECT_EQ(l3.config.model.rope_theta, 500000.0);
  EXPECT_EQ(l3.config.model.context_length, 8192);
  EXPECT_FALSE(l3.config.model.tie_embeddings);
  EXPECT_EQ(l3.ignored, std::vector<std::string>{"architectures"});
  const HfConfig smol = parse_hf_config_text(kReleased.at("smollm2-135m"), "smol");
  EXPECT_TRUE(smol.config.model.tie_embeddings);
  EXPECT_EQ(smol.config.model.kv_heads(), 3);
  // Llama 2 has no rope_theta key: LlamaConfig's 10000; its pretraining_tp changes nothing counted.
  const HfConfig l2 = parse_hf_config_text(kReleased.at("llama-2-70b"), "l2");
  EXPECT_EQ(l2.config.model.rope_theta, 10000.0);
  EXPECT_EQ(l2.ignored, (std::vector<std::string>{"architectures", "pretraining_tp"}));
  // Mistral's 4096 window, shorter than its 32768 positions, on every layer.
  TrainConfig mistral = parse_hf_config_text(kReleased.at("mistral-7b-v0.1"), "m").config;
  validate(mistral);
  EXPECT_EQ(mistral.model.sliding_window, 4096);
  EXPECT_EQ(mistral.model.sliding_window_pattern, 0);
  for (int64_t l : {0, 1, 31}) EXPECT_EQ(mistral.model.layer_window(l), 4096);
}

TEST(HfConfig, FamiliesNotModelledAreRefusedNamingWhatTheyNeed) {
  const std::map<std::string, std::vector<std::string>> refused = {
      {"mixtral-8x7b-v0.1", {"'mixtral'", "num_local_experts"}}};
  for (const auto& [name, needles] : refused) {
    SCOPED_TRACE(name);
    std::vector<std::string> all = needles;
    all.push_back("supported: falcon, gemma2, gpt2, llama, mistral, mpt, olmo2, phi3, qwen2");
    expect_invalid([&] { parse_hf_config_text(kReleased.at(name), name); }, all);
  }
}

TEST(HfConfig, RopeScalingLinearAndLlama3) {
  const std::string shape = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "max_position_embeddings": 16)";
  const HfConfig l31 = parse_hf_config_text(
      R"({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, )" +
          shape + "}",
      "l31");
  EXPECT_EQ(l31.config.model.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(l31.config.model.rope_factor, 8.0);
  EXPECT_EQ(l31.config.model.rope_high_freq_factor, 4.0);
  EXPECT_EQ(l31.config.model.rope_original_max_position, 8192);
  const HfConfig lin = parse_hf_config_text(
      R"({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}, )" + shape + "}", "linear");
  EXPECT_EQ(lin.config.model.rope_scaling, RopeScaling::linear);
  EXPECT_EQ(lin.config.model.rope_factor, 2.0);
}

TEST(HfConfig, DefaultsForAbsentKeys) {
  const std::string shape = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "max_position_embeddings": 16)";
  const HfConfig llama = parse_hf_config_text("{\"model_type\": \"llama\", " + shape + "}", "llama");
  EXPECT_EQ(llama.config.model.kv_heads(), 4);    // num_key_value_heads absent: as many as the heads
  EXPECT_EQ(llama.config.model.head_size(), 16);  // head_dim absent: hidden / heads
  EXPECT_FALSE(llama.config.model.tie_embeddings);
  EXPECT_EQ(llama.config.model.norm_eps, 1e-6);
  EXPECT_EQ(llama.config.model.rope_theta, 10000.0);
  EXPECT_EQ(llama.config.model.sliding_window, 0);
  EXPECT_EQ(llama.config.preset, "hf:llama");
  const HfConfig mistral = parse_hf_config_text("{\"model_type\": \"mistral\", " + shape + "}", "mistral");
  EXPECT_EQ(mistral.config.model.sliding_window, 4096);  // MistralConfig's default
  const HfConfig none =
      parse_hf_config_text("{\"model_type\": \"mistral\", \"sliding_window\": null, " + shape + "}", "mistral");
  EXPECT_EQ(none.config.model.sliding_window, 0);
  const HfConfig phi = parse_hf_config_text(
      "{\"model_type\": \"phi3\", \"head_dim\": 24, \"num_key_value_heads\": 1, \"bos_token_id\": 1, "
      "\"torch_dtype\": \"bfloat16\", " +
          shape + "}",
      "phi3");
  EXPECT_EQ(phi.config.model.q_width(), 96);
  EXPECT_EQ(phi.config.model.kv_width(), 24);
  EXPECT_EQ(phi.ignored, (std::vector<std::string>{"bos_token_id", "torch_dtype"}));
  // LlamaMLP with another activation (ACT2FN's names) and LlamaConfig's mlp_bias.
  for (const auto& [act, ffn] :
       {std::pair{"gelu", FfnKind::geglu}, std::pair{"gelu_new", FfnKind::geglu_tanh},
        std::pair{"gelu_pytorch_tanh", FfnKind::geglu_tanh}, std::pair{"silu", FfnKind::swiglu}}) {
    const HfConfig m = parse_hf_config_text(
        fmt::format(R"({{"model_type": "llama", "hidden_act": "{}", "mlp_bias": true, {}}})", act, shape), "act");
    EXPECT_EQ(m.config.model.ffn, ffn) << act;
    EXPECT_TRUE(m.config.model.mlp_bias);
    EXPECT_EQ(parameter_layout(m.config.model).total(),
              llama.config.model.num_layers * (2 * 96 + 64) + parameter_layout(llama.config.model).total());
  }
}

TEST(HfConfig, BadFilesAreRefusedNamingTheKey) {
  const std::string shape = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "max_position_embeddings": 16)";
  // The extra key after the shape's (a repeated key's last value wins, as Python's json reads it).
  auto with = [&](const std::string& extra) {
    return "{\"model_type\": \"llama\", " + shape + ", " + extra.substr(0, extra.size() - 2) + "}";
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> bad = {
      {"not json", {"not JSON"}},
      {"[1, 2]", {"expected a JSON object, got an array"}},
      {"{}", {"model_type: missing", "llama, mistral, mpt, olmo2, phi3"}},
      {R"({"model_type": "bert"})",
       {"model_type: 'bert' is not a model type reckon reads", "llama, mistral, mpt, olmo2, phi3"}},
      {R"({"model_type": 7})", {"model_type: expected a string, got an integer"}},
      {R"({"model_type": "llama"})", {"vocab_size: missing"}},
      {with(R"("hidden_size": "64", )"), {"hidden_size: expected an integer, got a string"}},
      {with(R"("rope_theta": "big", )"), {"rope_theta: expected a number, got a string"}},
      {with(R"("tie_word_embeddings": 1, )"), {"tie_word_embeddings: expected true or false"}},
      {with(R"("hidden_act": "relu", )"), {"hidden_act: 'relu' is not modelled", "gelu_pytorch_tanh"}},
      {with(R"("mlp_bias": 1, )"), {"mlp_bias: expected true or false"}},
      {with(R"("attention_bias": 3, )"), {"attention_bias"}},
      {with(R"("rope_scaling": {"rope_type": "yarn", "factor": 8.0}, )"),
       {"rope_scaling.rope_type: 'yarn' is not modelled"}},
      {with(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0}, )"), {"rope_scaling.low_freq_factor: missing"}},
      {with(R"("rope_scaling": {"type": "linear", "factor": 2.0, "beta": 1}, )"),
       {"rope_scaling.beta: a key reckon does not know"}},
      {with(R"("rope_scaling": 3, )"), {"rope_scaling: expected an object or null"}},
      {with(R"("attention_dropout": "0.1", )"), {"attention_dropout: expected a number, got a string"}},
      {R"({"model_type": "gpt2", "vocab_size": 100, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 16, )"
       R"("activation_function": "relu"})",
       {"activation_function: 'relu' is not modelled", "gelu_new"}},
      {R"({"model_type": "gpt2", "vocab_size": 100, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 16, )"
       R"("scale_attn_weights": false})",
       {"scale_attn_weights: false"}},
      {R"({"model_type": "gpt2", "vocab_size": 100, "n_embd": 64, "n_layer": 2, "n_positions": 16})",
       {"n_head: missing"}},
      {R"({"model_type": "falcon", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, )"
       R"("num_attention_heads": 4, "new_decoder_architecture": true})",
       {"new_decoder_architecture: true", "not modelled"}},
      {R"({"model_type": "falcon", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, )"
       R"("num_attention_heads": 4, "alibi": true})",
       {"alibi: true", "not modelled"}},
      {R"({"model_type": "falcon", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, )"
       R"("num_attention_heads": 4, "apply_residual_connection_post_layernorm": true})",
       {"apply_residual_connection_post_layernorm: true"}},
      {R"({"model_type": "falcon", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, )"
       R"("num_attention_heads": 4, "activation": "relu"})",
       {"activation: 'relu' is not modelled"}},
      {R"({"model_type": "falcon", "vocab_size": 100, "num_hidden_layers": 2, "num_attention_heads": 4})",
       {"hidden_size: missing"}},
      {with(R"("num_local_experts": 8, )"), {"num_local_experts: 8 is a mixture of experts"}},
      {with(R"("quantization_config": {"bits": 4}, )"), {"quantization_config:", "does not know"}},
      {with(R"("vocab_size": 99999999999999999999, )"), {"vocab_size: expected an integer, got a floating-point"}},
      {with(R"("vocab_size": 1e400, )"), {"not JSON", "number overflow"}},
      {std::string(20, '[') + std::string(20, ']'), {"nest deeper than 8 levels"}},
      {std::string(10000, '[') + std::string(10000, ']'), {"nest deeper than 8 levels"}},
  };
  for (const auto& [text, needles] : bad) {
    SCOPED_TRACE(text.substr(0, 60));
    std::vector<std::string> all = needles;
    all.push_back("--hf-config bad.json");
    expect_invalid([&] { parse_hf_config_text(text, "bad.json"); }, all);
  }
  // Ranges are validate()'s, after --set: a zero width loads and is refused naming reckon's field.
  TrainConfig zero = parse_hf_config_text(with(R"("num_key_value_heads": 3, )"), "kv.json").config;
  expect_invalid([&] { validate(zero); }, {"num_kv_heads: 3 is not allowed with num_heads 4"});
  // Files: missing, a folder, above 1 MiB.
  expect_invalid([&] { load_hf_config("/nonexistent/config.json"); }, {"--hf-config", "cannot read"});
  expect_invalid([&] { load_hf_config("/tmp"); }, {"--hf-config", "not a regular file"});
  const std::string big = "/tmp/reckon_hf_big.json";
  {
    std::ofstream out(big);
    out << "{\"x\": \"" << std::string(2 << 20, 'a') << "\"}";
  }
  expect_invalid([&] { load_hf_config(big); }, {"--hf-config", "above the limit of 1048576 bytes"});
  std::remove(big.c_str());
}

}  // namespace
}  // namespace reckon
