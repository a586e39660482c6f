#include "model/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "runtime/check.h"

namespace reckon {

namespace {

struct Preset {
  const char* name;
  int64_t v, t, l, d, h, f, b;
  FfnKind ffn;
  bool tied;
  Position pos;
  int64_t kv = 0, head_dim = 0;  // key/value heads, head width: 0 = H, D / H
  double theta = 10000;          // rope_theta (position = rope)
  int64_t window = 0;            // sliding_window
  RopeScaling scaling = RopeScaling::none;
  double factor = 1;  // rope_factor (llama3: with the band 1 … 4 over an original context of 8192, as Llama 3.1)
  AttentionBias bias = AttentionBias::none;
  int64_t published = 0;         // the released model's parameter count (source beside the row), 0 = none
  const char* counterpart = "";  // a preset of the same name in the other convention (estimate compares them)
  NormKind norm = NormKind::rmsnorm;
  bool norm_bias = false, mlp_bias = false;
  Block block = Block::sequential;
  // Gemma-2's: norms before and after each sublayer scaling by 1 + w, √D embeddings, the window's layer pattern, the
  // score and logit caps.
  NormPlacement placement = NormPlacement::pre;
  bool gemma_norms = false, qk_norm = false;
  int64_t pattern = 0;
  double cap = 0, logit_cap = 0;
};

// S and M are the shapes of shared/peers/lm_bench.py. The GPT-2 shapes follow the accounting problem of
// shared/seeds: FFN = W1, SiLU, W2 with d_ff = 4·d_model, untied output embedding, no learned positions
// (override tie_embeddings / position for the original GPT-2 layout).
// clang-format off
constexpr Preset kPresets[] = {
    {"tiny", 256, 32, 2, 64, 4, 256, 4, FfnKind::swiglu, false, Position::none},
    {"S", 8192, 256, 4, 512, 8, 2048, 8, FfnKind::swiglu, false, Position::none},
    {"M", 16384, 512, 8, 768, 12, 3072, 4, FfnKind::swiglu, false, Position::none},
    {.name = "gpt2-small", .v = 50257, .t = 1024, .l = 12, .d = 768, .h = 12, .f = 3072, .b = 1,
     .ffn = FfnKind::silu_mlp, .tied = false, .pos = Position::none, .counterpart = "openai-gpt2"},
    {.name = "gpt2-medium", .v = 50257, .t = 1024, .l = 24, .d = 1024, .h = 16, .f = 4096, .b = 1,
     .ffn = FfnKind::silu_mlp, .tied = false, .pos = Position::none, .counterpart = "openai-gpt2-medium"},
    {.name = "gpt2-large", .v = 50257, .t = 1024, .l = 36, .d = 1280, .h = 20, .f = 5120, .b = 1,
     .ffn = FfnKind::silu_mlp, .tied = false, .pos = Position::none, .counterpart = "openai-gpt2-large"},
    {.name = "gpt2-xl", .v = 50257, .t = 1024, .l = 48, .d = 1600, .h = 25, .f = 6400, .b = 1,
     .ffn = FfnKind::silu_mlp, .tied = false, .pos = Position::none, .counterpart = "openai-gpt2-xl"},
    // GPT-2 as OpenAI released it (Radford et al. 2019; Hugging Face's openai-community/gpt2* config.json): LayerNorm
    // with β, biases on every linear, GELU (tanh form, gelu_new) in a 2-matrix MLP, 1,024 learned positions, head
    // tied to the embedding. Published counts (model cards; shared/model_configs/README.md): 124,439,808 (small),
    // 354,823,168 (medium), 774,030,080 (large), 1,557,611,200 (XL).
    {.name = "openai-gpt2", .v = 50257, .t = 1024, .l = 12, .d = 768, .h = 12, .f = 3072, .b = 1,
     .ffn = FfnKind::gelu_tanh_mlp, .tied = true, .pos = Position::learned, .bias = AttentionBias::qkvo,
     .published = 124439808LL, .counterpart = "gpt2-small", .norm = NormKind::layernorm, .norm_bias = true,
     .mlp_bias = true},
    {.name = "openai-gpt2-medium", .v = 50257, .t = 1024, .l = 24, .d = 1024, .h = 16, .f = 4096, .b = 1,
     .ffn = FfnKind::gelu_tanh_mlp, .tied = true, .pos = Position::learned, .bias = AttentionBias::qkvo,
     .published = 354823168LL, .counterpart = "gpt2-medium", .norm = NormKind::layernorm, .norm_bias = true,
     .mlp_bias = true},
    {.name = "openai-gpt2-large", .v = 50257, .t = 1024, .l = 36, .d = 1280, .h = 20, .f = 5120, .b = 1,
     .ffn = FfnKind::gelu_tanh_mlp, .tied = true, .pos = Position::learned, .bias = AttentionBias::qkvo,
     .published = 774030080LL, .counterpart = "gpt2-large", .norm = NormKind::layernorm, .norm_bias = true,
     .mlp_bias = true},
    {.name = "openai-gpt2-xl", .v = 50257, .t = 1024, .l = 48, .d = 1600, .h = 25, .f = 6400, .b = 1,
     .ffn = FfnKind::gelu_tanh_mlp, .tied = true, .pos = Position::learned, .bias = AttentionBias::qkvo,
     .published = 1557611200LL, .counterpart = "gpt2-xl", .norm = NormKind::layernorm, .norm_bias = true,
     .mlp_bias = true},
    // GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1: n_layers, d_model, n_heads,
    // d_head 128, n_ctx 2048; d_ff = 4·d_model; GPT-2's BPE vocabulary, learned positions, tied embeddings).
    // Stand-ins, in reckon's model: silu_mlp for the GELU MLP (same 2 matrices), RMSNorm for LayerNorm, no biases
    // — about 0.01% of the parameters. 13B: the paper's d_model 5140 is not divisible by its 40 heads (of 128);
    // reckon uses 40 × 128 = 5120.
    {"gpt3-6.7b", 50257, 2048, 32, 4096, 32, 16384, 1, FfnKind::silu_mlp, true, Position::learned},
    {"gpt3-13b", 50257, 2048, 40, 5120, 40, 20480, 1, FfnKind::silu_mlp, true, Position::learned},
    {"gpt3-175b", 50257, 2048, 96, 12288, 96, 49152, 1, FfnKind::silu_mlp, true, Position::learned},
    // LLaMA 2 (Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models"; shapes from the
    // released config.json: vocab 32000, max_position_embeddings 4096, hidden_size, intermediate_size,
    // num_hidden_layers, num_attention_heads, num_key_value_heads; rope_theta absent: 10000). SwiGLU, RMSNorm, RoPE,
    // untied head. 70B uses grouped-query attention with 8 key/value heads (k and v are 1024 × 8192): the published
    // 68,976,648,192 parameters.
    {.name = "llama2-7b", .v = 32000, .t = 4096, .l = 32, .d = 4096, .h = 32, .f = 11008, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .published = 6738415616LL},
    {.name = "llama2-13b", .v = 32000, .t = 4096, .l = 40, .d = 5120, .h = 40, .f = 13824, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .published = 13015864320LL},
    {.name = "llama2-70b", .v = 32000, .t = 4096, .l = 80, .d = 8192, .h = 64, .f = 28672, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 8, .published = 68976648192LL},
    // Llama 3 / 3.1 (Grattafiori et al. 2024, "The Llama 3 Herd of Models", Table 3; the released config.json files:
    // vocab 128256, 8 key/value heads, rope_theta 500000, untied). Context 8192 (the pretraining sequence length;
    // 3.1's 131072 comes from its long-context stage). 3.1's rope_scaling: type llama3, factor 8, low_freq_factor 1,
    // high_freq_factor 4, original_max_position_embeddings 8192 (frequencies only). Published counts (checkpoint index
    // total_size / 2 bytes of bf16): 8,030,261,248; 70,553,706,496; 405,853,388,800.
    {.name = "llama3-8b", .v = 128256, .t = 8192, .l = 32, .d = 4096, .h = 32, .f = 14336, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 8, .theta = 500000,
     .published = 8030261248LL},
    {.name = "llama3-70b", .v = 128256, .t = 8192, .l = 80, .d = 8192, .h = 64, .f = 28672, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 8, .theta = 500000,
     .published = 70553706496LL},
    {.name = "llama3.1-405b", .v = 128256, .t = 8192, .l = 126, .d = 16384, .h = 128, .f = 53248, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 8, .theta = 500000,
     .scaling = RopeScaling::llama3, .factor = 8, .published = 405853388800LL},
    // Mistral 7B v0.1 (Jiang et al. 2023, "Mistral 7B", Table 1: window_size 4096, context_len 8192; config.json:
    // GQA 8, sliding_window 4096). Published: 7,241,732,096.
    {.name = "mistral-7b", .v = 32000, .t = 8192, .l = 32, .d = 4096, .h = 32, .f = 14336, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 8, .window = 4096,
     .published = 7241732096LL},
    // SmolLM2-135M (Hugging Face, config.json: 9 heads, 3 key/value heads, tied, rope_theta 100000, context 8192):
    // 134,515,008. TinyLlama-1.1B (Zhang et al. 2024; config.json: 4 key/value heads, context 2048):
    // 1,100,048,384.
    {.name = "smollm2-135m", .v = 49152, .t = 8192, .l = 30, .d = 576, .h = 9, .f = 1536, .b = 1,
     .ffn = FfnKind::swiglu, .tied = true, .pos = Position::rope, .kv = 3, .theta = 100000, .published = 134515008LL},
    {.name = "tinyllama-1.1b", .v = 32000, .t = 2048, .l = 22, .d = 2048, .h = 32, .f = 5632, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .kv = 4, .published = 1100048384LL},
    // Falcon-7B (Almazrouei et al. 2023, "The Falcon Series of Open Language Models"; tiiuae/falcon-7b config.json:
    // multi-query (one K/V head of 64), attention and a 4·D exact-GELU MLP in parallel from one LayerNorm with β, no
    // linear biases, RoPE, tied head, FalconConfig's 2048 positions): 6,921,720,704 (model card).
    {.name = "falcon-7b", .v = 65024, .t = 2048, .l = 32, .d = 4544, .h = 71, .f = 18176, .b = 1,
     .ffn = FfnKind::gelu_mlp, .tied = true, .pos = Position::rope, .kv = 1, .published = 6921720704LL,
     .norm = NormKind::layernorm, .norm_bias = true, .block = Block::parallel},
    // OLMo-2 7B (OLMo et al. 2024, "2 OLMo 2 Furious"; allenai/OLMo-2-1124-7B config.json: RMSNorm after each sublayer
    // and over the q and k projections, rope_theta 500000, untied): 7,298,617,344 (shared/model_configs/README.md).
    {.name = "olmo2-7b", .v = 100352, .t = 4096, .l = 32, .d = 4096, .h = 32, .f = 11008, .b = 1,
     .ffn = FfnKind::swiglu, .tied = false, .pos = Position::rope, .theta = 500000, .published = 7298617344LL,
     .placement = NormPlacement::post, .qk_norm = true},
    // Gemma-2 2B (Gemma Team 2024, "Gemma 2: Improving Open Language Models at a Practical Size", Table 1; google/
    // gemma-2-2b config.json: 8 heads of 256, 4 K/V heads, window 4096 on alternate layers, soft-caps 50 and 30, tied):
    // 2,614,341,888 (shared/model_configs/README.md).
    {.name = "gemma2-2b", .v = 256000, .t = 8192, .l = 26, .d = 2304, .h = 8, .f = 9216, .b = 1,
     .ffn = FfnKind::geglu_tanh, .tied = true, .pos = Position::rope, .kv = 4, .head_dim = 256, .window = 4096,
     .published = 2614341888LL, .placement = NormPlacement::sandwich, .gemma_norms = true, .pattern = 2, .cap = 50,
     .logit_cap = 30},
    // Qwen2.5 (Qwen Team 2024, "Qwen2.5 Technical Report": pre-trained at 4,096 tokens, then 32,768; config.json: GQA,
    // q/k/v biases always on, rope_theta 1e6; 0.5B tied): 494,032,768 and 7,615,616,512 (model cards).
    {.name = "qwen2.5-0.5b", .v = 151936, .t = 32768, .l = 24, .d = 896, .h = 14, .f = 4864, .b = 1,
     .ffn = FfnKind::swiglu, .tied = true, .pos = Position::rope, .kv = 2, .theta = 1e6, .bias = AttentionBias::qkv,
     .published = 494032768LL},
    {.name = "qwen2.5-7b",
     .v = 152064,
     .t = 32768,
     .l = 28,
     .d = 3584,
     .h = 28,
     .f = 18944,
     .b = 1,
     .ffn = FfnKind::swiglu,
     .tied = false,
     .pos = Position::rope,
     .kv = 4,
     .theta = 1e6,
     .bias = AttentionBias::qkv,
     .published = 7615616512LL},
};
// clang-format on

// Every settable key, where it may appear in a TOML file, what it accepts, how it is set from text and written
// back: the one table that parsing (`--set`, TOML), the unknown-key suggestions, validate()'s ranges, the
// allowed values in every message and config_overrides() (checkpoints, the JSON of a config) all read.
enum class Kind { integer, real, boolean, choice };
enum class Section { model, optim, top };
struct Range {  // integer and real fields: [lo, hi], either end open for reals
  double lo = 0, hi = 0;
  bool lo_open = false, hi_open = false;
};
struct FieldSpec {
  const char* key;
  Section section;
  Kind kind;
  std::string allowed;         // as printed: "an integer in [1, 65536]", "one of none, learned"
  std::optional<Range> range;  // checked by validate(); absent where a rule of its own applies (num_heads, …)
  std::function<void(TrainConfig&, std::string_view key, std::string_view value)> set;
  std::function<std::string(const TrainConfig&)> get;  // the shortest exact text `set` reads back
  std::function<double(const TrainConfig&)> number;    // integer and real fields: the value validate() checks
};

[[noreturn]] void throw_not(std::string_view key, std::string_view value, const char* what);
int64_t parse_int(std::string_view key, std::string_view value);
double parse_double(std::string_view key, std::string_view value);
bool parse_bool(std::string_view key, std::string_view value);

std::string range_text(Kind kind, const Range& r) {
  if (kind == Kind::integer) {
    return fmt::format("an integer in [{}, {}]", static_cast<int64_t>(r.lo), static_cast<int64_t>(r.hi));
  }
  return fmt::format("a number in {}{}, {}{}", r.lo_open ? "(" : "[", r.lo, r.hi, r.hi_open ? ")" : "]");
}

// Field makers, one per kind; `note` is appended to the allowed text.
template <typename T, typename F>
FieldSpec integer_field(const char* key, Section section, T TrainConfig::*part, int64_t F::*field, int64_t lo,
                        int64_t hi, const char* note = "") {
  const Range r{static_cast<double>(lo), static_cast<double>(hi)};
  return {key,
          section,
          Kind::integer,
          range_text(Kind::integer, r) + note,
          r,
          [=](TrainConfig& c, std::string_view k, std::string_view v) { c.*part.*field = parse_int(k, v); },
          [=](const TrainConfig& c) { return fmt::format("{}", c.*part.*field); },
          [=](const TrainConfig& c) { return static_cast<double>(c.*part.*field); }};
}
template <typename T, typename F>
FieldSpec real_field(const char* key, Section section, T TrainConfig::*part, double F::*field, Range r,
                     const char* note = "") {
  return {key,
          section,
          Kind::real,
          range_text(Kind::real, r) + note,
          r,
          [=](TrainConfig& c, std::string_view k, std::string_view v) { c.*part.*field = parse_double(k, v); },
          [=](const TrainConfig& c) { return fmt::format("{}", c.*part.*field); },
          [=](const TrainConfig& c) { return c.*part.*field; }};
}
// A model field of true / false.
FieldSpec bool_field(const char* key, Section section, bool ModelConfig::*field, const char* note = "") {
  return {key,
          section,
          Kind::boolean,
          std::string("one of true, false") + note,
          std::nullopt,
          [=](TrainConfig& c, std::string_view k, std::string_view v) { c.model.*field = parse_bool(k, v); },
          [=](const TrainConfig& c) { return std::string(c.model.*field ? "true" : "false"); },
          nullptr};
}
template <typename C, typename E, size_t N>
FieldSpec choice_field(const char* key, E C::*field, const EnumName<E> (&table)[N], const char* note = "") {
  return {key,
          Section::model,
          Kind::choice,
          "one of " + enum_choices(table) + note,
          std::nullopt,
          [=, &table](TrainConfig& c, std::string_view k, std::string_view v) {
            const std::optional<E> e = parse_enum(table, v);
            if (!e) {
              throw std::invalid_argument(
                  fmt::format("{}: '{}' is not allowed, allowed values are {}", k, v, enum_choices(table)));
            }
            c.model.*field = *e;
          },
          [=, &table](const TrainConfig& c) { return std::string(enum_name(table, c.model.*field)); },
          nullptr};
}

const std::vector<FieldSpec>& fields() {
  using M = ModelConfig;
  using O = AdamWConfig;
  constexpr Section model = Section::model, optim = Section::optim;
  constexpr auto m = &TrainConfig::model;
  constexpr auto o = &TrainConfig::optim;
  static const std::vector<FieldSpec> table = [&] {
    std::vector<FieldSpec> f;
    f.push_back(integer_field("vocab_size", model, m, &M::vocab_size, 2, 1 << 24));
    f.push_back(integer_field("context_length", model, m, &M::context_length, 1, 1 << 17));
    f.push_back(integer_field("num_layers", model, m, &M::num_layers, 1, 1024));
    f.push_back(integer_field("d_model", model, m, &M::d_model, 1, 1 << 16));
    FieldSpec heads = integer_field("num_heads", model, m, &M::num_heads, 1, 1);
    heads.allowed = "an integer in [1, 65536] that divides d_model (unless head_dim is set)";
    heads.range.reset();  // validate(): [1, d_model] and a divisor of it, or [1, 65536] with head_dim
    f.push_back(heads);
    // Both print and parse the field as set (0 = the default, which follows num_heads and d_model); number() and the
    // JSON are the value in effect.
    FieldSpec kv = integer_field("num_kv_heads", model, m, &M::num_kv_heads, 0, 0);
    kv.allowed = "0 (= num_heads) or an integer in [1, num_heads] that divides num_heads";
    kv.range.reset();  // validate(): a divisor of num_heads
    kv.number = [](const TrainConfig& c) { return static_cast<double>(c.model.kv_heads()); };
    f.push_back(kv);
    FieldSpec head_dim = integer_field("head_dim", model, m, &M::head_dim, 0, 1 << 16, " (0 = d_model / num_heads)");
    head_dim.number = [](const TrainConfig& c) { return static_cast<double>(c.model.head_size()); };
    f.push_back(head_dim);
    f.push_back(choice_field("attention_bias", &M::attention_bias, kAttentionBiases,
                             " (biases on q, k, v (qkv: Qwen2) and o (qkvo))"));
    f.push_back(integer_field("d_ff", model, m, &M::d_ff, 1, 1 << 18));
    f.push_back(choice_field("ffn", &M::ffn, kFfnKinds,
                             " (gated: swiglu, geglu, geglu_tanh; 2-matrix: silu_mlp, gelu_mlp, gelu_tanh_mlp)"));
    f.push_back({"mlp_bias", model, Kind::boolean, "one of true, false (biases on the FFN's linears)", std::nullopt,
                 [](TrainConfig& c, std::string_view k, std::string_view v) { c.model.mlp_bias = parse_bool(k, v); },
                 [](const TrainConfig& c) { return std::string(c.model.mlp_bias ? "true" : "false"); }, nullptr});
    f.push_back(
        {"tie_embeddings", model, Kind::boolean, "one of true, false", std::nullopt,
         [](TrainConfig& c, std::string_view k, std::string_view v) { c.model.tie_embeddings = parse_bool(k, v); },
         [](const TrainConfig& c) { return std::string(c.model.tie_embeddings ? "true" : "false"); }, nullptr});
    f.push_back(choice_field("position", &M::position, kPositions));
    f.push_back(
        real_field("rope_theta", model, m, &M::rope_theta, {0, 1e12, true, false}, " (position = rope's base)"));
    f.push_back(choice_field("rope_scaling", &M::rope_scaling, kRopeScalings, " (RoPE frequency scaling)"));
    f.push_back(real_field("rope_factor", model, m, &M::rope_factor, {0, 1e6, true, false}));
    f.push_back(real_field("rope_low_freq_factor", model, m, &M::rope_low_freq_factor, {0, 1e6, true, false}));
    f.push_back(real_field("rope_high_freq_factor", model, m, &M::rope_high_freq_factor, {0, 1e6, true, false}));
    f.push_back(integer_field("rope_original_max_position", model, m, &M::rope_original_max_position, 1, 1 << 24));
    f.push_back(real_field("alibi_bias_max", model, m, &M::alibi_bias_max, {0, 64, true, false},
                           " (position = alibi: head k of P has slope 2^(−alibi_bias_max·k / P))"));
    f.push_back(
        integer_field("sliding_window", model, m, &M::sliding_window, 0, 1 << 17, " (keys a query sees; 0 = none)"));
    FieldSpec pattern = integer_field("sliding_window_pattern", model, m, &M::sliding_window_pattern, 0, 1024,
                                      " (0 = every layer windowed; p ≥ 2: every p-th layer global)");
    pattern.range.reset();  // validate(): 1 is refused
    f.push_back(pattern);
    f.push_back(real_field("attn_logit_softcapping", model, m, &M::attn_logit_softcapping, {0, 1e6},
                           " (0 = none; scores → c·tanh(s / c))"));
    f.push_back(real_field("final_logit_softcapping", model, m, &M::final_logit_softcapping, {0, 1e6},
                           " (0 = none; logits → c·tanh(x / c))"));
    f.push_back(integer_field("batch_size", model, m, &M::batch_size, 1, 1 << 16));
    f.push_back(choice_field("norm", &M::norm, kNormKinds, " (rmsnorm: LLaMA; layernorm: GPT-2, Falcon)"));
    f.push_back({"norm_bias", model, Kind::boolean, "one of true, false (LayerNorm's bias; layernorm only)",
                 std::nullopt,
                 [](TrainConfig& c, std::string_view k, std::string_view v) { c.model.norm_bias = parse_bool(k, v); },
                 [](const TrainConfig& c) { return std::string(c.model.norm_bias ? "true" : "false"); }, nullptr});
    f.push_back(real_field("norm_eps", model, m, &M::norm_eps, {0, 1, true, false}));
    f.push_back(choice_field("block", &M::block, kBlocks,
                             " (sequential: GPT-2, LLaMA; parallel: attention and ffn from one norm, Falcon, GPT-J)"));
    f.push_back(bool_field("norm_unit_offset", model, &M::norm_unit_offset,
                           " (RMSNorm scales by 1 + weight, weights start at 0: Gemma's; rmsnorm only)"));
    f.push_back(bool_field("qk_norm", model, &M::qk_norm,
                           " (RMSNorm over the q and k projections before RoPE: OLMo-2's; rmsnorm only)"));
    f.push_back(bool_field("scale_embeddings", model, &M::scale_embeddings,
                           " (embedding rows × √d_model: Gemma's; the tied head reads the table unscaled)"));
    f.push_back(choice_field("norm_placement", &M::norm_placement, kNormPlacements,
                             " (pre: GPT-2, LLaMA; post: after each sublayer, OLMo-2; sandwich: both, Gemma-2)"));
    f.push_back(choice_field("precision", &M::precision, kPrecisions));
    f.push_back(choice_field("grad_dtype", &M::grad_dtype, kGradDTypes, " (bf16 only with precision = bf16)"));
    f.push_back(choice_field("attention", &M::attention, kAttentionKinds));
    f.push_back(choice_field("recompute", &M::recompute, kRecomputes));
    FieldSpec zero = integer_field("zero_stage", model, m, &M::zero_stage, 0, 3, " (0 = DDP, 1, 2, 3 = ZeRO stages)");
    zero.range.reset();  // validate() says what each stage shards
    f.push_back(zero);
    f.push_back(
        real_field("bucket_cap_mb", model, m, &M::bucket_cap_mb, {0.001, 4096}, " (MiB per gradient all-reduce)"));
    f.push_back(integer_field("gradient_accumulation_steps", model, m, &M::gradient_accumulation_steps, 1, 1 << 16,
                              " (micro-batches of batch_size rows per optimizer step)"));
    f.push_back(real_field("lr", optim, o, &O::lr, {0, 10}));
    f.push_back(real_field("beta1", optim, o, &O::beta1, {0, 1, false, true}));
    f.push_back(real_field("beta2", optim, o, &O::beta2, {0, 1, false, true}));
    f.push_back(real_field("adam_eps", optim, o, &O::eps, {0, 1, true, false}));
    f.push_back(real_field("weight_decay", optim, o, &O::weight_decay, {0, 1, false, true}));
    f.push_back({"seed", Section::top, Kind::integer, "an integer in [0, 9223372036854775807]", std::nullopt,
                 [](TrainConfig& c, std::string_view k, std::string_view v) {
                   const int64_t s = parse_int(k, v);
                   check_arg(s >= 0, "seed: {} is outside the allowed range [0, {}]", s,
                             std::numeric_limits<int64_t>::max());
                   c.seed = static_cast<uint64_t>(s);
                 },
                 [](const TrainConfig& c) { return fmt::format("{}", c.seed); }, nullptr});
    return f;
  }();
  return table;
}

// Keys renamed since checkpoints were first written, still read under their old names.
constexpr std::pair<std::string_view, std::string_view> kOldKeys[] = {{"rmsnorm_eps", "norm_eps"}};

const FieldSpec* find_field(std::string_view key) {
  for (const auto& [old_key, key_now] : kOldKeys) {
    if (key == old_key) key = key_now;
  }
  for (const FieldSpec& f : fields()) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

// Levenshtein distance, for "did you mean …?" (keys are short).
int64_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "; did you mean 'd_model'?" when a known name is close (at most a third of the letters differ), else "".
std::string suggestion(std::string_view key, const std::vector<std::string>& names) {
  std::string best;
  int64_t best_distance = std::numeric_limits<int64_t>::max();
  for (const std::string& name : names) {
    const int64_t d = edit_distance(key, name);
    if (d < best_distance) best_distance = d, best = name;
  }
  const int64_t limit = std::max<int64_t>(2, static_cast<int64_t>(key.size()) / 3);
  return best_distance <= limit ? fmt::format("; did you mean '{}'?", best) : std::string();
}

std::vector<std::string> field_names() {
  std::vector<std::string> names;
  for (const FieldSpec& f : fields()) names.emplace_back(f.key);
  return names;
}

[[noreturn]] void throw_not(std::string_view key, std::string_view value, const char* what) {
  const FieldSpec* f = find_field(key);
  throw std::invalid_argument(fmt::format("{}: '{}' is not {}; allowed: {}", key, value, what, f->allowed));
}

int64_t parse_int(std::string_view key, std::string_view value) {
  int64_t out = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec == std::errc::result_out_of_range) throw_not(key, value, "an integer that fits int64");
  if (ec != std::errc() || ptr != value.data() + value.size()) throw_not(key, value, "an integer");
  return out;
}

double parse_double(std::string_view key, std::string_view value) {
  double out = 0;
  const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
  if (ec != std::errc() || ptr != value.data() + value.size()) throw_not(key, value, "a number");
  return out;
}

bool parse_bool(std::string_view key, std::string_view value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw_not(key, value, "a boolean");
}

// The one setter from text: name -> field. Range checks are validate()'s (a config is checked whole).
void set_field(TrainConfig& c, std::string_view key, std::string_view value) {
  const FieldSpec* f = find_field(key);
  if (f == nullptr) {
    throw std::invalid_argument(fmt::format("unknown config key '{}'{}; allowed keys: {}", key,
                                            suggestion(key, field_names()), fmt::join(field_names(), ", ")));
  }
  f->set(c, key, value);
}

// ---- TOML files: bounded before the parser sees them.
constexpr int64_t kMaxConfigBytes = 1 << 20;  // a config is a few hundred bytes; 1 MiB is generous
constexpr int kMaxNesting = 8;                // key parts, table-header parts, bracket depth

// Reads a config file whole, refusing what is not a small regular file.

// A pre-scan the TOML parser never sees past: dotted keys, table headers and nested arrays / inline tables
// deeper than kMaxNesting are refused here (toml++ recurses on them and a 100,000-part header exhausts the
// stack). Strings and comments are skipped; the count is conservative (a dot in a bare value counts too).
void prescan_nesting(const std::string& path, const std::string& text) {
  int64_t line = 1;
  int depth = 0, parts = 1;  // bracket depth; dot-separated parts of the key or header on this line
  bool before_value = true;  // on this line, before '=' (in a key or a header)
  enum { code, comment, basic, literal, basic3, literal3 } state = code;
  auto fail = [&](const char* what) {
    throw std::invalid_argument(
        fmt::format("config file {}: line {}: {} nest deeper than {} levels", path, line, what, kMaxNesting));
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    const bool three = i + 2 < text.size() && text[i + 1] == ch && text[i + 2] == ch;
    switch (state) {
      case comment:
        if (ch == '\n') state = code;
        break;
      case basic:
        if (ch == '\\')
          ++i;
        else if (ch == '"' || ch == '\n')
          state = code;
        break;
      case literal:
        if (ch == '\'' || ch == '\n') state = code;
        break;
      case basic3:
        if (ch == '\\')
          ++i;
        else if (ch == '"' && three)
          state = code, i += 2;
        break;
      case literal3:
        if (ch == '\'' && three) state = code, i += 2;
        break;
      case code:
        if (ch == '#')
          state = comment;
        else if (ch == '"')
          state = three ? (i += 2, basic3) : basic;
        else if (ch == '\'')
          state = three ? (i += 2, literal3) : literal;
        else if (ch == '[' || ch == '{') {
          if (++depth > kMaxNesting) fail("arrays, inline tables or table headers");
        } else if (ch == ']' || ch == '}')
          depth = std::max(depth - 1, 0);
        else if (ch == '=')
          before_value = false;
        else if (ch == '.' && (before_value || depth > 0) && ++parts > kMaxNesting)
          fail("dotted keys");
        else if (ch == ',')
          parts = 1;
        break;
    }
    if (ch == '\n') {
      ++line;
      if (state != basic3 && state != literal3) {
        parts = 1;
        before_value = true;
      }
    }
  }
}

// One TOML value as the text set_field parses, after checking its TOML type against the field's kind.
std::string value_text(const std::string& where, const FieldSpec& f, const toml::node& node) {
  auto wrong = [&](const char* got) {
    return std::invalid_argument(fmt::format("{}{}: expected {}, got {}", where, f.key, f.allowed, got));
  };
  const char* type = node.is_table()            ? "a table"
                     : node.is_array()          ? "an array"
                     : node.is_string()         ? "a string"
                     : node.is_integer()        ? "an integer"
                     : node.is_floating_point() ? "a floating-point number"
                     : node.is_boolean()        ? "a boolean"
                                                : "a date or time";
  switch (f.kind) {
    case Kind::integer:
      if (!node.is_integer()) throw wrong(type);
      return std::to_string(*node.value<int64_t>());
    case Kind::real:
      if (node.is_integer()) return std::to_string(*node.value<int64_t>());
      if (!node.is_floating_point()) throw wrong(type);
      return fmt::format("{}", *node.value<double>());
    case Kind::boolean:
      if (!node.is_boolean()) throw wrong(type);
      return *node.value<bool>() ? "true" : "false";
    case Kind::choice:
      if (!node.is_string()) throw wrong(type);
      return *node.value<std::string>();
  }
  throw wrong(type);
}

}  // namespace

std::string read_small_file(const std::string& path, std::string_view option) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw std::invalid_argument(fmt::format("{}: cannot read config file {}: {}", option, path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw std::invalid_argument(fmt::format("{}: config file {} is not a regular file{}", option, path,
                                            S_ISDIR(st.st_mode) ? " (it is a folder)" : ""));
  }
  if (st.st_size > kMaxConfigBytes) {
    throw std::invalid_argument(fmt::format("{}: config file {} is {} bytes, above the limit of {} bytes", option, path,
                                            static_cast<int64_t>(st.st_size), kMaxConfigBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text;
  text.resize(static_cast<size_t>(kMaxConfigBytes) + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) throw std::invalid_argument(fmt::format("{}: cannot read config file {}", option, path));
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    throw std::invalid_argument(
        fmt::format("{}: config file {} is above the limit of {} bytes", option, path, kMaxConfigBytes));
  }
  return text;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

TrainConfig preset_config(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) {
      TrainConfig c;
      c.preset = p.name;
      c.model = ModelConfig{ModelShape{.vocab_size = p.v,
                                       .context_length = p.t,
                                       .num_layers = p.l,
                                       .d_model = p.d,
                                       .num_heads = p.h,
                                       .num_kv_heads = p.kv,
                                       .head_dim = p.head_dim,
                                       .attention_bias = p.bias,
                                       .d_ff = p.f,
                                       .ffn = p.ffn,
                                       .mlp_bias = p.mlp_bias,
                                       .tie_embeddings = p.tied,
                                       .position = p.pos,
                                       .rope_theta = p.theta,
                                       .rope_scaling = p.scaling,
                                       .rope_factor = p.factor,
                                       .sliding_window = p.window,
                                       .sliding_window_pattern = p.pattern,
                                       .attn_logit_softcapping = p.cap,
                                       .final_logit_softcapping = p.logit_cap,
                                       .norm = p.norm,
                                       .norm_bias = p.norm_bias,
                                       .block = p.block,
                                       .norm_placement = p.placement,
                                       .norm_unit_offset = p.gemma_norms,
                                       .scale_embeddings = p.gemma_norms,
                                       .qk_norm = p.qk_norm},
                            RunSettings{.batch_size = p.b}};
      return c;
    }
  }
  throw std::invalid_argument(
      fmt::format("preset: '{}' is not a preset; allowed values are {}", name, fmt::join(preset_names(), ", ")));
}

PresetFacts preset_facts(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return {p.published, p.counterpart};
  }
  return {};
}

void apply_override(TrainConfig& config, std::string_view kv) {
  const auto eq = kv.find('=');
  check_arg(eq != std::string_view::npos && eq > 0, "--set: '{}' is not of the form key=value", kv);
  set_field(config, kv.substr(0, eq), kv.substr(eq + 1));
}

TrainConfig load_config_file(const std::string& path) {
  return parse_config_text(read_small_file(path, "--config"), path);
}

TrainConfig parse_config_text(const std::string& text, const std::string& path) {
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    throw std::invalid_argument(
        fmt::format("config file {}: {} bytes, above the limit of {} bytes", path, text.size(), kMaxConfigBytes));
  }
  prescan_nesting(path, text);
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(
        fmt::format("config file {}: {} (line {})", path, e.description(), e.source().begin.line));
  }
  // Layout: optional `preset = "…"`, then keys at top level or in [model] / [optim]; nothing else.
  TrainConfig config;
  if (const toml::node* preset = root.get("preset")) {
    if (!preset->is_string()) {
      throw std::invalid_argument(
          fmt::format("config file {}: preset: expected a string, one of {}", path, fmt::join(preset_names(), ", ")));
    }
    try {
      config = preset_config(*preset->value<std::string>());
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("config file {}: {}", path, e.what()));
    }
  }
  std::map<std::string, std::string> given;  // key -> where it was set: one field, one place
  auto apply_table = [&](const toml::table& table, const std::string& where, std::optional<Section> section) {
    std::vector<std::string> allowed;
    for (const FieldSpec& f : fields()) {
      if (!section || f.section == *section) allowed.emplace_back(f.key);
    }
    if (!section) allowed.insert(allowed.begin(), {"preset", "model", "optim"});
    for (const auto& [key, node] : table) {
      const std::string k(key.str());
      if (!section && (k == "preset" || k == "model" || k == "optim")) continue;  // handled around this loop
      const FieldSpec* f = find_field(k);
      if (f == nullptr || (section && f->section != *section)) {
        const std::string kind = node.is_table() ? "table" : "key";
        throw std::invalid_argument(fmt::format("config file {}: unknown {} '{}{}'{}; allowed here: {}", path, kind,
                                                where, k, suggestion(k, allowed), fmt::join(allowed, ", ")));
      }
      if (const auto seen = given.find(k); seen != given.end()) {
        throw std::invalid_argument(fmt::format("config file {}: '{}{}' is also given as '{}{}'; give each key once",
                                                path, where, k, seen->second, k));
      }
      given.emplace(k, where);
      try {
        set_field(config, k, value_text(where, *f, node));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("config file {}: {}", path, e.what()));
      }
    }
  };
  apply_table(root, "", std::nullopt);
  for (const auto& [name, section] : {std::pair{"model", Section::model}, std::pair{"optim", Section::optim}}) {
    const toml::node* node = root.get(name);
    if (node == nullptr) continue;
    if (!node->is_table()) {
      throw std::invalid_argument(
          fmt::format("config file {}: '{}' must be a table ([{}]), got a value", path, name, name));
    }
    apply_table(*node->as_table(), std::string(name) + ".", section);
  }
  return config;
}

void validate(const TrainConfig& c) {
  // The ranges of the field table, in its order; then the rules that relate fields.
  for (const FieldSpec& f : fields()) {
    if (!f.range) continue;
    if (f.kind == Kind::integer) {
      check_range(f.key, static_cast<int64_t>(f.number(c)), static_cast<int64_t>(f.range->lo),
                  static_cast<int64_t>(f.range->hi));
    } else {
      const double v = f.number(c);
      check_range(f.key, v, f.range->lo, f.range->hi, f.range->lo_open, f.range->hi_open);
      // The step computes in float32: a value that is 0 or denormal there (1e-320 as an epsilon) is refused here.
      check_arg(v == 0 || std::fabs(v) >= std::numeric_limits<float>::min(),
                "{}: {} is below float32's smallest normal number {} (the step computes in float32, where it would "
                "be {}); {}",
                f.key, v, std::numeric_limits<float>::min(), static_cast<float>(v), f.allowed);
    }
    if (std::string_view(f.key) == "d_model") {  // the head counts follow d_model in the messages, as in the table
      const ModelConfig& m = c.model;
      check_range("head_dim", m.head_dim, 0, 1 << 16);
      if (m.head_dim == 0) {
        check_range("num_heads", m.num_heads, 1, m.d_model);
        check_arg(m.d_model % m.num_heads == 0,
                  "num_heads: {} does not divide d_model {} (d_model % num_heads must be 0, or set head_dim)",
                  m.num_heads, m.d_model);
      } else {
        check_range("num_heads", m.num_heads, 1, 1 << 16);
      }
      check_arg(m.num_kv_heads >= 0 && m.num_kv_heads <= m.num_heads &&
                    (m.num_kv_heads == 0 || m.num_heads % m.num_kv_heads == 0),
                "num_kv_heads: {} is not allowed with num_heads {}; allowed: 0 (= num_heads) or a divisor of num_heads "
                "in [1, {}]",
                m.num_kv_heads, m.num_heads, m.num_heads);
    }
  }
  const ModelConfig& m = c.model;
  check_arg(m.position != Position::rope || m.head_size() % 2 == 0,
            "head_dim: {} is odd; position = rope turns pairs of a head's values, so it needs an even head width "
            "(set head_dim, or num_heads so that d_model / num_heads is even)",
            m.head_size());
  check_arg(m.rope_scaling != RopeScaling::llama3 || m.rope_high_freq_factor > m.rope_low_freq_factor,
            "rope_high_freq_factor: {} must be above rope_low_freq_factor {} (llama3 scaling blends between them)",
            m.rope_high_freq_factor, m.rope_low_freq_factor);
  check_arg(!m.parallel_block() || m.norm_placement == NormPlacement::pre,
            "norm_placement: {} needs block = sequential (a parallel block has one norm, before both branches); "
            "allowed with block = parallel: pre",
            enum_name(kNormPlacements, m.norm_placement));
  check_arg(
      !m.qk_norm || m.norm == NormKind::rmsnorm,
      "qk_norm: true needs norm = rmsnorm (OLMo-2's RMSNorm over q and k; norm {}); allowed with layernorm: false",
      norm_kind_name(m.norm));
  check_arg(!m.norm_unit_offset || m.norm == NormKind::rmsnorm,
            "norm_unit_offset: true needs norm = rmsnorm (Gemma's RMSNorm; norm {}); allowed with layernorm: false",
            norm_kind_name(m.norm));
  check_arg(!m.norm_bias || m.norm == NormKind::layernorm,
            "norm_bias: true needs norm = layernorm (norm {} has no bias); allowed with rmsnorm: false",
            norm_kind_name(m.norm));
  check_arg(m.position != Position::alibi || m.attn_logit_softcapping == 0,
            "attn_logit_softcapping: {} with position = alibi is not modelled (the cap and ALiBi's bias have no agreed "
            "order); allowed with alibi: 0",
            m.attn_logit_softcapping);
  check_arg(m.sliding_window_pattern != 1,
            "sliding_window_pattern: 1 would make every layer global; allowed: 0 (every layer uses sliding_window) or "
            "an integer in [2, 1024] (every p-th layer global)");
  check_arg(m.zero_stage >= 0 && m.zero_stage <= 3,
            "zero_stage: {} is outside the allowed range [0, 3] (0 = DDP, "
            "1 = + AdamW state sharded, 2 = + gradients, 3 = + parameters)",
            m.zero_stage);
  check_arg(m.grad_dtype != GradDType::bf16 || m.precision == Precision::bf16,
            "grad_dtype: bf16 needs precision = bf16 (precision {} keeps float32 gradients); allowed: auto, fp32",
            precision_name(m.precision));
}

std::vector<std::string> config_overrides(const TrainConfig& c) {
  std::vector<std::string> out;
  for (const FieldSpec& f : fields()) out.push_back(fmt::format("{}={}", f.key, f.get(c)));
  return out;
}

nlohmann::json config_json(const TrainConfig& c) {
  nlohmann::json j = {{"preset", c.preset}};
  for (const FieldSpec& f : fields()) {
    const std::string text = f.get(c);
    nlohmann::json value;
    switch (f.kind) {
      case Kind::integer:
        value = f.number ? static_cast<int64_t>(f.number(c)) : parse_int(f.key, text);
        break;
      case Kind::real:
        value = f.number(c);
        break;
      case Kind::boolean:
        value = parse_bool(f.key, text);
        break;
      case Kind::choice:
        value = text;
        break;
    }
    (f.section == Section::optim ? j["optim"][f.key] : j[f.key]) = value;
  }
  return j;
}

std::string attention_heads_name(const ModelShape& m) {
  if (m.kv_heads() == m.num_heads) return "MHA";
  if (m.kv_heads() == 1) return "MQA";
  return fmt::format("GQA {}", m.kv_heads());
}

// "2nd", "3rd", "6th", "11th", "21st".
static std::string ordinal(int64_t n) {
  const int64_t tens = n % 100, ones = n % 10;
  const char* suffix = tens >= 11 && tens <= 13 ? "th" : ones == 1 ? "st" : ones == 2 ? "nd" : ones == 3 ? "rd" : "th";
  return fmt::format("{}{}", n, suffix);
}

std::string describe(const ModelConfig& m) {
  std::string precision = precision_name(m.precision);
  if (m.precision == Precision::bf16) {
    precision += m.dtypes().grad == DType::f32 ? " (fp32 grads)" : " (bf16 grads)";
  }
  std::string heads =
      fmt::format("H {} ({}){}", m.num_heads, attention_heads_name(m),
                  m.head_size() * m.num_heads == m.d_model ? "" : fmt::format(", head_dim {}", m.head_size()));
  if (m.sliding_window > 0) {
    heads += fmt::format(", window {}{}", m.sliding_window,
                         m.sliding_window_pattern >= 2
                             ? fmt::format(" (every {} layer global)", ordinal(m.sliding_window_pattern))
                             : "");
  }
  if (m.attention_bias != AttentionBias::none)
    heads += fmt::format(", {} biases", m.attention_bias == AttentionBias::qkv ? "q/k/v" : "q/k/v/o");
  if (m.qk_norm) heads += ", q/k norms";
  if (m.attn_logit_softcapping > 0) heads += fmt::format(", score cap {}", m.attn_logit_softcapping);
  if (m.final_logit_softcapping > 0) heads += fmt::format(", logit cap {}", m.final_logit_softcapping);
  return fmt::format(
      "V {}, T {}, L {}, D {}, {}, d_ff {}, ffn {}{}, {}{}{}, {}, position {}, B {}, {}, attention {}{}{}{}",
      m.vocab_size, m.context_length, m.num_layers, m.d_model, heads, m.d_ff, ffn_kind_name(m.ffn),
      m.mlp_bias ? " (biases)" : "", norm_kind_name(m.norm), m.norm_bias ? " (bias)" : "",
      fmt::format("{}{}{}",
                  m.parallel_block() ? ", parallel block"
                  : m.norm_placement == NormPlacement::pre
                      ? ""
                      : fmt::format(", {} norms", enum_name(kNormPlacements, m.norm_placement)),
                  m.norm_unit_offset ? " (scale 1 + w)" : "", m.scale_embeddings ? ", embeddings × √D" : ""),
      m.tie_embeddings ? "tied" : "untied",
      m.position == Position::alibi  ? fmt::format("alibi (bias max {})", m.alibi_bias_max)
      : m.position != Position::rope ? std::string(position_name(m.position))
      : m.rope_scaling == RopeScaling::none
          ? fmt::format("rope (θ {})", m.rope_theta)
          : fmt::format("rope (θ {}, {} ×{})", m.rope_theta, enum_name(kRopeScalings, m.rope_scaling), m.rope_factor),
      m.batch_size, precision, attention_name(m.attention),
      m.recompute == Recompute::none ? "" : fmt::format(", recompute {}", recompute_name(m.recompute)),
      m.zero_stage == 0 ? "" : fmt::format(", zero stage {}", m.zero_stage),
      m.gradient_accumulation_steps == 1 ? ""
                                         : fmt::format(", {} micro-batches a step", m.gradient_accumulation_steps));
}

}  // namespace reckon
