#include "model/hf_config.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace reckon {

namespace {

using nlohmann::json;

constexpr int kMaxJsonDepth = 8;  // a config.json is flat but for rope_scaling / quantization tables

// Nesting of arrays and objects outside strings, before the parser sees the text.
void prescan_depth(const std::string& text, const std::string& path) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        throw std::invalid_argument(
            fmt::format("--hf-config {}: arrays and objects nest deeper than {} levels", path, kMaxJsonDepth));
      }
    } else if (c == ']' || c == '}') {
      depth = std::max(depth - 1, 0);
    }
  }
}

// A value as JSON text, never throwing (invalid UTF-8 is replaced).
std::string dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_float:
      return "a floating-point number";
    default:
      return "an integer";
  }
}

// Reads the file's keys one at a time, remembering which were used.
class Keys {
 public:
  // prefix: "rope_scaling." for the keys of that object, so that messages name the whole key.
  Keys(const json& root, std::string path, std::string prefix = "")
      : root_(root), path_(std::move(path)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw std::invalid_argument(fmt::format("--hf-config {}: {}{}: {}", path_, prefix_, key, why));
  }
  const std::string& path() const { return path_; }
  const json* find(const std::string& key) {
    used_.push_back(key);
    const auto it = root_.find(key);
    return it == root_.end() ? nullptr : &*it;
  }
  std::optional<int64_t> integer(const std::string& key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_number_integer() && !v->is_number_unsigned())
      fail(key, fmt::format("expected an integer, got {}", type_of(*v)));
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(key, "does not fit int64");
    return v->get<int64_t>();
  }
  int64_t required(const std::string& key) {
    const std::optional<int64_t> v = integer(key);
    if (!v) fail(key, "missing (reckon needs it: no default stands in for the model's shape)");
    return *v;
  }
  std::optional<double> number(const std::string& key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_number()) fail(key, fmt::format("expected a number, got {}", type_of(*v)));
    return v->get<double>();
  }
  std::optional<bool> boolean(const std::string& key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_boolean()) fail(key, fmt::format("expected true or false, got {}", type_of(*v)));
    return v->get<bool>();
  }
  std::optional<std::string> string(const std::string& key) {
    const json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (!v->is_string()) fail(key, fmt::format("expected a string, got {}", type_of(*v)));
    return v->get<std::string>();
  }
  // A key that changes the step unless it has its neutral value (absent, null, false, 0).
  void neutral(const std::string& key, const std::string& what) {
    const json* v = find(key);
    if (v == nullptr || v->is_null() || (v->is_boolean() && !v->get<bool>()) ||
        (v->is_number() && v->get<double>() == 0)) {
      return;
    }
    fail(key, fmt::format("{} is {}: not modelled by reckon", dump(*v), what));
  }
  // A training-time setting reckon leaves out of the step it counts (dropout): read, and listed in `left_out` when it
  // is on (not 0), so that the user sees it.
  void left_out(const std::string& key, const std::string& what, std::vector<std::string>& out) {
    const json* v = find(key);
    if (v == nullptr || v->is_null() || (v->is_number() && v->get<double>() == 0)) return;
    if (!v->is_number()) fail(key, fmt::format("expected a number, got {}", type_of(*v)));
    out.push_back(fmt::format("{} = {} ({})", key, dump(*v), what));
  }
  bool used(const std::string& key) const { return std::find(used_.begin(), used_.end(), key) != used_.end(); }

 private:
  const json& root_;
  std::string path_, prefix_;
  std::vector<std::string> used_;
};

// Keys that name, tokenize, store or cache the model, and change nothing reckon counts.
constexpr const char* kNeutralKeys[] = {
    "architectures",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "initializer_range",
    "_name_or_path",
    "tokenizer_class",
    "pretraining_tp",  // LLaMA's tensor-parallel slicing of the same products: the same FLOPs and bytes
    "original_max_position_embeddings",  // read only by rope_scaling kinds, which are refused
    "max_window_layers",                 // read only with use_sliding_window
    // GPT-2's: n_ctx repeats n_positions; the summary_* keys configure GPT2DoubleHeadsModel's classification head,
    // task_specific_params generation defaults: none is part of the language model.
    "n_ctx",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_type",
    "summary_use_proj",
    "task_specific_params",
    // Falcon's: read only by its new decoder architecture, which is refused.
    "num_kv_heads",
    "num_ln_in_parallel_attn",
    "cache_implementation",  // Gemma-2's generation cache
    // MPT's: where and how weights are initialised, logging, the tokenizer's name; learned_pos_emb, which neither
    // Hugging Face's MptModel nor MosaicML's reads with ALiBi on (the only MPT reckon reads).
    "init_device",
    "init_config",
    "verbose",
    "tokenizer_name",
    "learned_pos_emb",
};

const char* const kSupported[] = {"falcon", "gemma2", "gpt2", "llama", "mistral", "mpt", "olmo2", "phi3", "qwen2"};

// What each model type reckon does not model yet needs, for its refusal.
std::optional<std::string> unmodelled(const std::string& type) {
  if (type == "mixtral") return "it is a mixture of experts (num_local_experts), not modelled";
  return std::nullopt;
}

// rope_scaling: null, or {"rope_type" (or "type"): "linear" | "llama3", "factor", and for llama3 "low_freq_factor",
// "high_freq_factor", "original_max_position_embeddings"}. Other kinds (dynamic, yarn, longrope) are refused.
void map_rope_scaling(Keys& k, ModelConfig& m) {
  const json* s = k.find("rope_scaling");
  if (s == nullptr || s->is_null()) return;
  if (!s->is_object()) k.fail("rope_scaling", fmt::format("expected an object or null, got {}", type_of(*s)));
  Keys inner(*s, k.path(), "rope_scaling.");
  std::optional<std::string> kind = inner.string("rope_type");
  if (!kind) kind = inner.string("type");
  if (!kind) inner.fail("rope_type", "missing (linear or llama3)");
  auto number = [&](const char* key, std::optional<double> fallback) {
    const std::optional<double> v = inner.number(key);
    if (!v && !fallback) inner.fail(key, "missing");
    return v ? *v : *fallback;
  };
  if (*kind == "linear") {
    m.rope_scaling = RopeScaling::linear;
    m.rope_factor = number("factor", std::nullopt);
  } else if (*kind == "llama3") {
    m.rope_scaling = RopeScaling::llama3;
    m.rope_factor = number("factor", std::nullopt);
    m.rope_low_freq_factor = number("low_freq_factor", std::nullopt);
    m.rope_high_freq_factor = number("high_freq_factor", std::nullopt);
    const std::optional<int64_t> original = inner.integer("original_max_position_embeddings");
    if (!original) inner.fail("original_max_position_embeddings", "missing");
    m.rope_original_max_position = *original;
  } else {
    inner.fail("rope_type", fmt::format("'{}' is not modelled; reckon models linear and llama3", *kind));
  }
  for (const auto& [key, value] : s->items()) {
    if (!inner.used(key)) inner.fail(key, "a key reckon does not know in rope_scaling");
  }
}

// layer_types (newer transformers write it): one "full_attention" or "sliding_attention" per layer. All full: no
// window; all sliding: the window on every layer; full exactly at the layers l with (l + 1) % p = 0:
// sliding_window_pattern p. Any other arrangement is refused naming the key.
void map_layer_types(Keys& k, ModelConfig& m) {
  const json* types = k.find("layer_types");
  if (types == nullptr || types->is_null()) return;
  if (!types->is_array() || static_cast<int64_t>(types->size()) != m.num_layers) {
    k.fail("layer_types", fmt::format("expected a list of num_hidden_layers = {} entries", m.num_layers));
  }
  std::vector<bool> sliding;
  for (const json& t : *types) {
    if (!t.is_string() || (t != "full_attention" && t != "sliding_attention")) {
      k.fail("layer_types", fmt::format("{} is not \"full_attention\" or \"sliding_attention\"", t.dump()));
    }
    sliding.push_back(t == "sliding_attention");
  }
  const int64_t layers = m.num_layers;
  int64_t first_full = 0;
  while (first_full < layers && sliding[static_cast<size_t>(first_full)]) ++first_full;
  if (first_full == 0 && std::find(sliding.begin(), sliding.end(), true) == sliding.end()) {
    m.sliding_window = 0;  // every layer global
    return;
  }
  if (m.sliding_window == 0) k.fail("layer_types", "sliding_attention layers need a sliding_window");
  const int64_t p = first_full == layers ? 0 : first_full + 1;  // 0: every layer slides
  for (int64_t l = 0; l < layers; ++l) {
    const bool expected = p == 0 || (l + 1) % p != 0;
    if (p == 1 || sliding[static_cast<size_t>(l)] != expected) {
      k.fail("layer_types",
             "sliding and full layers not in a repeating pattern (every p-th layer full): not "
             "modelled by reckon");
    }
  }
  m.sliding_window_pattern = p;
}

// The gated MLP (LlamaMLP, GemmaMLP: down(act(gate(x)) ⊙ up(x))) for Hugging Face's activation name (ACT2FN):
// silu → swiglu, gelu → geglu (exact erf), gelu_new / gelu_pytorch_tanh → geglu_tanh (the tanh form: the two names
// compute the same function); anything else refused naming `key`.
FfnKind gated_ffn(Keys& k, const char* key, const std::string& act) {
  if (act == "silu" || act == "swish") return FfnKind::swiglu;
  if (act == "gelu") return FfnKind::geglu;
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") return FfnKind::geglu_tanh;
  k.fail(key, fmt::format("'{}' is not modelled; reckon's MLPs use silu, gelu, gelu_new or gelu_pytorch_tanh", act));
}

void map_llama_family(Keys& k, const std::string& type, ModelConfig& m) {
  m.vocab_size = k.required("vocab_size");
  m.d_model = k.required("hidden_size");
  m.d_ff = k.required("intermediate_size");
  m.num_layers = k.required("num_hidden_layers");
  m.num_heads = k.required("num_attention_heads");
  m.context_length = k.required("max_position_embeddings");
  m.num_kv_heads = k.integer("num_key_value_heads").value_or(0);  // absent: as many as the query heads
  m.head_dim = k.integer("head_dim").value_or(0);                 // absent: hidden_size / num_attention_heads
  m.norm_eps = k.number("rms_norm_eps").value_or(1e-6);
  m.rope_theta = k.number("rope_theta").value_or(10000.0);
  m.tie_embeddings = k.boolean("tie_word_embeddings").value_or(false);
  m.position = Position::rope;
  m.ffn = gated_ffn(k, "hidden_act", k.string("hidden_act").value_or("silu"));
  // sliding_window: null = none; absent = the config class's default (MistralConfig: 4096; the others: none);
  // use_sliding_window = false (Qwen2's switch) turns it off.
  const bool present = k.find("sliding_window") != nullptr;
  const std::optional<int64_t> window = k.integer("sliding_window");
  const int64_t by_default = type == "mistral" && !present ? 4096 : 0;
  if (type == "qwen2") {  // Qwen2Config: use_sliding_window defaults to false; on, it windows layers from
                          // max_window_layers up, which reckon does not model
    if (k.boolean("use_sliding_window").value_or(false)) {
      k.fail("use_sliding_window", "true windows the layers from max_window_layers up: not modelled by reckon");
    }
    m.sliding_window = 0;
    m.attention_bias = AttentionBias::qkv;  // Qwen2Attention: q, k and v always carry biases, o none
  } else {
    m.sliding_window = k.boolean("use_sliding_window").value_or(true) ? window.value_or(by_default) : 0;
    // LlamaConfig's attention_bias: biases on q, k, v and o.
    if (k.boolean("attention_bias").value_or(false)) m.attention_bias = AttentionBias::qkvo;
  }
  m.mlp_bias = k.boolean("mlp_bias").value_or(false);  // LlamaConfig's: gate_proj, up_proj, down_proj
  map_layer_types(k, m);
  map_rope_scaling(k, m);
  k.neutral("num_local_experts", "a mixture of experts");
}

// The 2-matrix GELU MLP (GPT-2's, Falcon's) for Hugging Face's activation name: gelu → gelu_mlp (exact erf), gelu_new
// / gelu_pytorch_tanh → gelu_tanh_mlp (the tanh form); anything else refused naming `key`.
FfnKind gelu_mlp(Keys& k, const char* key, const std::string& act) {
  if (act == "gelu") return FfnKind::gelu_mlp;
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") return FfnKind::gelu_tanh_mlp;
  k.fail(key,
         fmt::format("'{}' is not modelled; reckon's 2-matrix GELU MLPs use gelu, gelu_new or gelu_pytorch_tanh", act));
}

// Dropout: a training-time choice, left out of the counted step (no masks, no extra FLOPs) and reported.
void dropout_left_out(Keys& k, std::vector<std::string>& out) {
  for (const char* key : {"attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "emb_pdrop", "attn_pdrop",
                          "summary_first_dropout"}) {
    k.left_out(key, "dropout: reckon counts the step without it", out);
  }
}

// GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm with β before each sublayer and at the end, biases on every
// linear (c_attn's q, k, v; c_proj; the MLP's c_fc and c_proj), a 2-matrix MLP, the head tied to the embedding
// (GPT2Config: tie_word_embeddings defaults to true). n_inner null or absent = 4·n_embd; activation_function
// gelu_new (the default) and gelu_pytorch_tanh are the tanh form, gelu the exact one; layer_norm_epsilon 1e-5.
void map_gpt2(Keys& k, ModelConfig& m) {
  m.vocab_size = k.required("vocab_size");
  m.d_model = k.required("n_embd");
  m.num_layers = k.required("n_layer");
  m.num_heads = k.required("n_head");
  m.context_length = k.required("n_positions");
  m.d_ff = k.integer("n_inner").value_or(4 * m.d_model);
  m.ffn = gelu_mlp(k, "activation_function", k.string("activation_function").value_or("gelu_new"));
  m.norm = NormKind::layernorm;
  m.norm_bias = true;
  m.norm_eps = k.number("layer_norm_epsilon").value_or(1e-5);
  m.attention_bias = AttentionBias::qkvo;
  m.mlp_bias = true;
  m.position = Position::learned;
  m.tie_embeddings = k.boolean("tie_word_embeddings").value_or(true);
  if (!k.boolean("scale_attn_weights").value_or(true)) {
    k.fail("scale_attn_weights", "false leaves the scores unscaled by 1/sqrt(head_dim): not modelled by reckon");
  }
  k.neutral("scale_attn_by_inverse_layer_idx", "a per-layer score scale");
  k.neutral("reorder_and_upcast_attn", "a reordered float32 attention");
  k.neutral("add_cross_attention", "cross-attention");
}

// Falcon (FalconForCausalLM, the original decoder: new_decoder_architecture false): LayerNorm with β (nn.LayerNorm),
// K/V heads 1 with multi_query (Falcon-7B) or as many as the query heads, head_dim = hidden_size / heads, a 2-matrix
// MLP 4·D wide (ffn_hidden_size when given) with activation "gelu" (exact, the default), biases on every linear only
// with `bias`, RoPE unless `alibi`, the head tied (tie_word_embeddings absent: true); parallel_attn (the default)
// feeds attention and the MLP from one LayerNorm, false is a sequential pre-norm block. Absent
// max_position_embeddings: FalconConfig's 2048. Refused: alibi, new_decoder_architecture (Falcon-40B/180B's two
// LayerNorms and grouped K/V), apply_residual_connection_post_layernorm.
void map_falcon(Keys& k, ModelConfig& m) {
  m.vocab_size = k.required("vocab_size");
  m.d_model = k.required("hidden_size");
  m.num_layers = k.required("num_hidden_layers");
  m.num_heads = k.required("num_attention_heads");
  m.context_length = k.integer("max_position_embeddings").value_or(2048);
  if (k.boolean("new_decoder_architecture").value_or(false)) {
    k.fail("new_decoder_architecture",
           "true is Falcon-40B/180B's decoder (separate LayerNorms for attention and the "
           "MLP in parallel, num_kv_heads): not modelled by reckon");
  }
  if (k.boolean("alibi").value_or(false)) {  // FalconAttention adds BLOOM's bias before the 1/√d_k scale, not after
    k.fail("alibi",
           "true is Falcon's ALiBi (its bias scaled with the scores by 1/sqrt(head_dim)): not modelled by "
           "reckon, whose position = alibi is MPT's (bias added after the scale)");
  }
  k.neutral("apply_residual_connection_post_layernorm", "a residual taken after the LayerNorm");
  m.num_kv_heads = k.boolean("multi_query").value_or(true) ? 1 : 0;
  m.d_ff = k.integer("ffn_hidden_size").value_or(4 * m.d_model);
  m.ffn = gelu_mlp(k, "activation", k.string("activation").value_or("gelu"));
  m.block = k.boolean("parallel_attn").value_or(true) ? Block::parallel : Block::sequential;
  const bool bias = k.boolean("bias").value_or(false);
  m.attention_bias = bias ? AttentionBias::qkvo : AttentionBias::none;
  m.mlp_bias = bias;
  m.norm = NormKind::layernorm;
  m.norm_bias = true;
  m.norm_eps = k.number("layer_norm_epsilon").value_or(1e-5);
  m.position = Position::rope;
  m.rope_theta = k.number("rope_theta").value_or(10000.0);
  map_rope_scaling(k, m);
  m.tie_embeddings = k.boolean("tie_word_embeddings").value_or(true);
}

// Gemma-2 (Gemma2ForCausalLM): RMSNorms before and after each sublayer (input_layernorm, post_attention_layernorm,
// pre_feedforward_layernorm, post_feedforward_layernorm) scaling by 1 + weight, embeddings × √hidden_size, a gated
// MLP (hidden_activation; absent: gelu_pytorch_tanh), soft-capped scores and logits, the window on every other layer
// from layer 0, tied head. Gemma2Config's defaults for absent keys: num_key_value_heads 4, head_dim 256,
// max_position_embeddings 8192, rms_norm_eps 1e-6, rope_theta 10000, sliding_window 4096, attn_logit_softcapping 50,
// final_logit_softcapping 30, query_pre_attn_scalar 256, tie_word_embeddings true. Scores are scaled by
// query_pre_attn_scalar^-1/2: reckon models it where it equals head_dim (Gemma-2 2B and 9B) and refuses it elsewhere.
void map_gemma2(Keys& k, ModelConfig& m) {
  m.vocab_size = k.required("vocab_size");
  m.d_model = k.required("hidden_size");
  m.d_ff = k.required("intermediate_size");
  m.num_layers = k.required("num_hidden_layers");
  m.num_heads = k.required("num_attention_heads");
  m.num_kv_heads = k.integer("num_key_value_heads").value_or(4);
  m.head_dim = k.integer("head_dim").value_or(256);
  m.context_length = k.integer("max_position_embeddings").value_or(8192);
  m.norm_eps = k.number("rms_norm_eps").value_or(1e-6);
  m.rope_theta = k.number("rope_theta").value_or(10000.0);
  map_rope_scaling(k, m);
  m.position = Position::rope;
  // Gemma2MLP reads hidden_activation; hidden_act is the older key, read when it is the only one.
  const std::optional<std::string> legacy = k.string("hidden_act"), act = k.string("hidden_activation");
  m.ffn = gated_ffn(k, act ? "hidden_activation" : "hidden_act", act.value_or(legacy.value_or("gelu_pytorch_tanh")));
  if (k.boolean("attention_bias").value_or(false)) m.attention_bias = AttentionBias::qkvo;
  const bool present = k.find("sliding_window") != nullptr;
  m.sliding_window = present ? k.integer("sliding_window").value_or(0) : 4096;
  m.sliding_window_pattern = m.sliding_window > 0 ? 2 : 0;  // layers 0, 2, 4, … windowed
  map_layer_types(k, m);
  auto cap = [&](const char* key, double by_default) {
    return k.find(key) != nullptr ? k.number(key).value_or(0.0) : by_default;
  };
  m.attn_logit_softcapping = cap("attn_logit_softcapping", 50.0);
  m.final_logit_softcapping = cap("final_logit_softcapping", 30.0);
  const double scalar = k.number("query_pre_attn_scalar").value_or(256.0);
  if (scalar != static_cast<double>(m.head_size())) {
    k.fail("query_pre_attn_scalar", fmt::format("{} scales the scores by {}^-1/2, not head_dim {}^-1/2: not modelled "
                                                "by reckon",
                                                scalar, scalar, m.head_size()));
  }
  m.tie_embeddings = k.boolean("tie_word_embeddings").value_or(true);
  m.norm = NormKind::rmsnorm;
  m.norm_unit_offset = true;
  m.scale_embeddings = true;
  m.norm_placement = NormPlacement::sandwich;
}

// MPT's attn_config (MptAttentionConfig): ALiBi on (alibi, default true; alibi_bias_max, default 8), multi-head
// attention, scores scaled by 1/sqrt(head_dim); attn_impl (torch, flash, triton) computes the same step. What changes
// the step and reckon does not model is refused naming the key: multiquery_attention, clip_qkv, a softmax_scale
// other than 1/sqrt(head_dim), prefix_lm, qk_ln, attn_uses_sequence_id, alibi false (Hugging Face's MptModel adds
// ALiBi whatever the key says: refused rather than guessed).
void map_mpt_attention(Keys& k, ModelConfig& m, std::vector<std::string>& left_out) {
  const json* a = k.find("attn_config");
  m.position = Position::alibi;
  m.alibi_bias_max = 8;
  if (a == nullptr || a->is_null()) return;
  if (!a->is_object()) k.fail("attn_config", fmt::format("expected an object or null, got {}", type_of(*a)));
  Keys inner(*a, k.path(), "attn_config.");
  const std::string type = inner.string("attn_type").value_or("multihead_attention");
  if (type != "multihead_attention") {
    inner.fail("attn_type", fmt::format("'{}' is not modelled (Hugging Face's MptAttention is multi-head); allowed: "
                                        "multihead_attention",
                                        type));
  }
  if (!inner.boolean("alibi").value_or(true)) {
    inner.fail("alibi",
               "false: Hugging Face's MptModel adds ALiBi regardless, MosaicML's code would use learned "
               "positions; not modelled by reckon");
  }
  m.alibi_bias_max = inner.number("alibi_bias_max").value_or(8.0);
  const std::optional<double> scale = inner.number("softmax_scale");
  const int64_t dk = m.num_heads > 0 ? m.d_model / m.num_heads : 0;
  if (scale && dk > 0 && std::abs(*scale * std::sqrt(static_cast<double>(dk)) - 1.0) > 1e-6) {
    inner.fail("softmax_scale",
               fmt::format("{} is not 1/sqrt(head_dim {}): a score scale reckon does not model", *scale, dk));
  }
  inner.neutral("clip_qkv", "a clamp of q, k and v");
  inner.neutral("prefix_lm", "prefix-LM (bidirectional) attention");
  inner.neutral("qk_ln", "a LayerNorm over q and k (reckon's qk_norm is OLMo-2's RMSNorm)");
  inner.neutral("attn_uses_sequence_id", "attention restricted to sequence ids");
  (void)inner.string("attn_impl");  // torch, flash or triton: the same products
  inner.left_out("attn_pdrop", "dropout: reckon counts the step without it", left_out);
  for (const auto& [key, value] : a->items()) {
    if (!inner.used(key)) inner.fail(key, "a key reckon does not know in attn_config");
  }
}

// MPT (MptForCausalLM): LayerNorm without β before each sublayer and at the end (Hugging Face's MptBlock drops the
// norms' biases), Wqkv and out_proj without biases, a 2-matrix exact-GELU MLP 4·d_model wide, ALiBi instead of
// position embeddings, the head tied (tie_word_embeddings absent: true). MptConfig's keys: d_model, n_heads,
// n_layers, vocab_size (required here), max_seq_len (absent: 2048), layer_norm_epsilon (1e-5). Hugging Face's
// modeling ignores expansion_ratio and no_bias (always 4 and bias-free), MosaicML's reads them: values other than 4
// and true are refused rather than guessed; learned_pos_emb is ignored by both when ALiBi is on (no table exists).
void map_mpt(Keys& k, ModelConfig& m, std::vector<std::string>& left_out) {
  m.vocab_size = k.required("vocab_size");
  m.d_model = k.required("d_model");
  m.num_layers = k.required("n_layers");
  m.num_heads = k.required("n_heads");
  m.context_length = k.integer("max_seq_len").value_or(2048);
  const std::optional<double> ratio = k.number("expansion_ratio");
  if (ratio && *ratio != 4) {
    k.fail("expansion_ratio", fmt::format("{} is not 4: Hugging Face's MptMLP is 4·d_model wide whatever the key; "
                                          "not modelled by reckon",
                                          *ratio));
  }
  m.d_ff = 4 * m.d_model;
  m.ffn = FfnKind::gelu_mlp;  // nn.GELU(approximate="none")
  if (!k.boolean("no_bias").value_or(true)) {
    k.fail("no_bias",
           "false: Hugging Face's MPT has no biases whatever the key, MosaicML's code adds them; not "
           "modelled by reckon");
  }
  m.norm = NormKind::layernorm;
  m.norm_bias = false;
  m.norm_eps = k.number("layer_norm_epsilon").value_or(1e-5);
  const std::string norm_type = k.string("norm_type").value_or("low_precision_layernorm");
  if (norm_type != "low_precision_layernorm" && norm_type != "layernorm") {
    k.fail("norm_type", fmt::format("'{}' is not modelled; allowed: low_precision_layernorm, layernorm (the same "
                                    "LayerNorm)",
                                    norm_type));
  }
  k.neutral("logit_scale", "a scale on the logits");
  const std::optional<double> fraction = k.number("embedding_fraction");
  if (fraction && *fraction != 1.0) {
    k.fail("embedding_fraction", fmt::format("{} scales the embedding's gradient: not modelled by reckon", *fraction));
  }
  m.tie_embeddings = k.boolean("tie_word_embeddings").value_or(true);
  map_mpt_attention(k, m, left_out);
}

}  // namespace

std::vector<std::string> hf_model_types() { return {std::begin(kSupported), std::end(kSupported)}; }

HfConfig parse_hf_config_text(const std::string& text, const std::string& path) {
  prescan_depth(text, path);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number past double's range (out_of_range)
    throw std::invalid_argument(fmt::format("--hf-config {}: not JSON: {}", path, e.what()));
  }
  if (!root.is_object()) {
    throw std::invalid_argument(fmt::format("--hf-config {}: expected a JSON object, got {}", path, type_of(root)));
  }
  Keys k(root, path);
  const std::optional<std::string> type = k.string("model_type");
  const std::string supported = fmt::format("{}", fmt::join(hf_model_types(), ", "));
  if (!type) k.fail("model_type", "missing; reckon reads the model types " + supported);
  if (const std::optional<std::string> why = unmodelled(*type)) {
    k.fail("model_type", fmt::format("'{}' is refused: {}; supported: {}", *type, *why, supported));
  }
  if (std::find(std::begin(kSupported), std::end(kSupported), *type) == std::end(kSupported)) {
    k.fail("model_type", fmt::format("'{}' is not a model type reckon reads; supported: {}", *type, supported));
  }
  HfConfig out;
  out.model_type = *type;
  out.config.preset = "hf:" + *type;
  if (*type == "gpt2") {
    map_gpt2(k, out.config.model);
  } else if (*type == "falcon") {
    map_falcon(k, out.config.model);
  } else if (*type == "mpt") {
    map_mpt(k, out.config.model, out.left_out);
  } else if (*type == "gemma2") {
    map_gemma2(k, out.config.model);
  } else if (*type == "olmo2") {
    // OLMo-2 (Olmo2ForCausalLM): LLaMA's keys and block with the RMSNorms after each sublayer
    // (post_attention_layernorm, post_feedforward_layernorm) and over the whole q and k projections before RoPE
    // (q_norm, k_norm); Olmo2Config's rms_norm_eps default is 1e-5.
    map_llama_family(k, *type, out.config.model);
    out.config.model.norm_eps = k.number("rms_norm_eps").value_or(1e-5);
    out.config.model.norm_placement = NormPlacement::post;
    out.config.model.qk_norm = true;
  } else {
    map_llama_family(k, *type, out.config.model);
  }
  dropout_left_out(k, out.left_out);
  for (const auto& [key, value] : root.items()) {
    if (k.used(key)) continue;
    if (std::find_if(std::begin(kNeutralKeys), std::end(kNeutralKeys), [&](const char* n) { return key == n; }) ==
        std::end(kNeutralKeys)) {
      k.fail(key, fmt::format("{} is a key reckon does not know for model_type {}, so it cannot say the key changes "
                              "nothing it counts; remove it if it does not",
                              dump(value).substr(0, 80), *type));
    }
    out.ignored.push_back(key);
  }
  return out;  // validated by the command, after its --set overrides (they may bring it into range)
}

HfConfig load_hf_config(const std::string& path) {
  return parse_hf_config_text(read_small_file(path, "--hf-config"), path);
}

}  // namespace reckon
