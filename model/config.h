// Model and training configuration: presets, a TOML file, `key=value` overrides, and validation that names
// the field and its allowed range.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/precision.h"
#include "ops/attention.h"
#include "ops/ffn.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace reckon {

// none: no position information beyond the causal mask; learned: GPT-2's table added to the embeddings (a parameter);
// rope: rotary embeddings on q and k in every layer (ops/rope.h; no parameters), base rope_theta; alibi: ALiBi's
// per-head linear distance penalty on the scores (ops/attention.h; MPT, BLOOM; no parameters), slopes from
// alibi_bias_max.
enum class Position { none, learned, rope, alibi };
// naive: the T×T probabilities are kept for backward (ops/attention.h); flash: only the output and a float32
// log-sum-exp per row, scores recomputed in backward (ops/flash_attention.h).
enum class AttentionKind { naive, flash };
// What backward recomputes instead of keeping (phase `recompute` in the counters):
//   none:      every activation is kept from forward to backward;
//   attention: the attention core (Korthikanti et al. 2022's selective recompute): its inputs q, k, v are kept,
//              what it saved beyond them (naive: the B·H·T² probabilities; flash: the log-sum-exp) is freed in
//              forward and re-run just before its backward;
//   full:      torch.utils.checkpoint per block: only each block's input is kept; the block's forward is re-run
//              just before its backward (gradients equal to `none` bit for bit in float32).
enum class Recompute { none, attention, full };
// Biases on the attention projections (nn.Linear's, zeros at initialisation as Hugging Face's _init_weights): none
// (LLaMA), qkv (Qwen2: q, k and v, always on), qkvo (LLaMA's attention_bias = true: q, k, v and o).
enum class AttentionBias { none, qkv, qkvo };
// How a block composes its sublayers: sequential (GPT-2, LLaMA: x + attn(norm(x)), then + ffn(norm(that))) or parallel
// (GPT-J, PaLM, Falcon-7B: x + attn(norm(x)) + ffn(norm(x)) — one norm feeds both, no second norm in the layer).
enum class Block { sequential, parallel };
// Where a sequential block's norms sit: pre (GPT-2, LLaMA: x + f(norm(x))), post (OLMo-2: x + norm(f(x)), the
// sublayer reads the residual stream itself) or sandwich (Gemma-2: x + norm(f(norm(x))), 4 norms a layer).
enum class NormPlacement { pre, post, sandwich };
// The names a config writes for each choice (runtime/enum_table.h): parsing, printing and messages read these.
inline constexpr EnumName<Position> kPositions[] = {
    {Position::none, "none"}, {Position::learned, "learned"}, {Position::rope, "rope"}, {Position::alibi, "alibi"}};
inline constexpr EnumName<RopeScaling> kRopeScalings[] = {
    {RopeScaling::none, "none"}, {RopeScaling::linear, "linear"}, {RopeScaling::llama3, "llama3"}};
inline constexpr EnumName<AttentionBias> kAttentionBiases[] = {
    {AttentionBias::none, "none"}, {AttentionBias::qkv, "qkv"}, {AttentionBias::qkvo, "qkvo"}};
inline constexpr EnumName<Block> kBlocks[] = {{Block::sequential, "sequential"}, {Block::parallel, "parallel"}};
inline constexpr EnumName<NormPlacement> kNormPlacements[] = {
    {NormPlacement::pre, "pre"}, {NormPlacement::post, "post"}, {NormPlacement::sandwich, "sandwich"}};
inline constexpr EnumName<AttentionKind> kAttentionKinds[] = {{AttentionKind::naive, "naive"},
                                                              {AttentionKind::flash, "flash"}};
inline constexpr EnumName<Recompute> kRecomputes[] = {
    {Recompute::none, "none"}, {Recompute::attention, "attention"}, {Recompute::full, "full"}};

// What the model is: the shape of its parameters and of the computation they define (what a Hugging Face
// config.json describes). The parameter layout (model/layout.h) depends on this alone.
struct ModelShape {
  int64_t vocab_size = 256;
  int64_t context_length = 32;
  int64_t num_layers = 2;
  int64_t d_model = 64;
  int64_t num_heads = 4;
  // Key/value heads (Hugging Face's num_key_value_heads): 0 = as many as num_heads (multi-head attention); a divisor
  // k of num_heads shares each K/V head among num_heads / k query heads (grouped-query; 1 = multi-query).
  int64_t num_kv_heads = 0;
  // Width of one head: 0 = d_model / num_heads; otherwise q is D × (H·head_dim) and o is (H·head_dim) × D.
  int64_t head_dim = 0;
  AttentionBias attention_bias = AttentionBias::none;
  int64_t d_ff = 256;
  FfnKind ffn = FfnKind::swiglu;  // ops/ffn.h: gated (swiglu, geglu, geglu_tanh) or plain 2-matrix MLPs
  // Biases on the FFN's linears (Hugging Face's mlp_bias; GPT-2's c_fc and c_proj, always on): w1, w3 (gated), w2.
  bool mlp_bias = false;
  bool tie_embeddings = false;
  Position position = Position::none;
  double rope_theta = 10000;  // RoPE's base (Hugging Face's rope_theta); read only with position = rope
  // Hugging Face's rope_scaling (ops/rope.h): none, linear (rope_factor) or llama3 (rope_factor, the band's
  // rope_low_freq_factor and rope_high_freq_factor, rope_original_max_position). Frequencies only.
  RopeScaling rope_scaling = RopeScaling::none;
  double rope_factor = 1, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int64_t rope_original_max_position = 8192;
  // ALiBi's slopes 2^(−alibi_bias_max·k / P) (MPT's alibi_bias_max, 8 as BLOOM); read only with position = alibi.
  double alibi_bias_max = 8;
  // Sliding-window attention's W (query i sees keys i − W + 1 … i, Hugging Face's mask); 0 = none. A window at least
  // context_length long covers every key: causal attention exactly.
  int64_t sliding_window = 0;
  // Which layers use the window: 0 = every layer (Mistral); p ≥ 2 = layer l attends globally when (l + 1) % p = 0, the
  // others use the window (Hugging Face's sliding_window_pattern: Gemma-2's alternation from a local layer 0 is 2,
  // Gemma-3's five local to one global is 6).
  int64_t sliding_window_pattern = 0;
  // Gemma-2's soft-capping, 0 = none: each attention score s becomes c·tanh(s / c) before the softmax
  // (attn_logit_softcapping), each output logit likewise before the loss (final_logit_softcapping).
  double attn_logit_softcapping = 0, final_logit_softcapping = 0;
  // The normalisation (ops/norm.h): rmsnorm (LLaMA) or layernorm (GPT-2, Falcon), norm_bias = LayerNorm's β
  // (nn.LayerNorm's bias; refused with rmsnorm); eps inside the square root of both (Hugging Face's rms_norm_eps,
  // layer_norm_epsilon).
  NormKind norm = NormKind::rmsnorm;
  bool norm_bias = false;
  double norm_eps = 1e-5;
  Block block = Block::sequential;
  NormPlacement norm_placement = NormPlacement::pre;
  // Gemma's: RMSNorm scales by 1 + weight (weights start at 0), and the embedding rows are multiplied by √d_model
  // (the tied head reads the unscaled table).
  bool norm_unit_offset = false;
  bool scale_embeddings = false;
  // OLMo-2's q/k-norm: an RMSNorm over the whole q projection (H·head_dim wide) and the whole k projection
  // (KV·head_dim), after the projections and before RoPE (Olmo2Attention's q_norm, k_norm). rmsnorm only.
  bool qk_norm = false;

  RopeFrequencies rope_frequencies() const {
    return {rope_theta,           rope_scaling,          rope_factor,
            rope_low_freq_factor, rope_high_freq_factor, rope_original_max_position};
  }
  // The window layer `layer` uses (0 = none) and its attention core's score rule.
  int64_t layer_window(int64_t layer) const {
    const bool global = sliding_window_pattern >= 2 && (layer + 1) % sliding_window_pattern == 0;
    return global ? 0 : sliding_window;
  }
  AttentionScores attention_scores(int64_t layer) const {
    return {layer_window(layer), static_cast<float>(attn_logit_softcapping),
            position == Position::alibi ? static_cast<float>(alibi_bias_max) : 0.0f};
  }
  int64_t kv_heads() const { return num_kv_heads > 0 ? num_kv_heads : num_heads; }
  bool qkv_bias() const { return attention_bias != AttentionBias::none; }
  bool o_bias() const { return attention_bias == AttentionBias::qkvo; }
  int64_t head_size() const { return head_dim > 0 ? head_dim : num_heads > 0 ? d_model / num_heads : 0; }
  int64_t q_width() const { return num_heads * head_size(); }    // H·head_dim: q's and the context's width
  int64_t kv_width() const { return kv_heads() * head_size(); }  // KV·head_dim: k's and v's width
  bool parallel_block() const { return block == Block::parallel; }
  // Hugging Face's Gemma normaliser: hidden_size ** 0.5 in double, then the activations' float32.
  float embedding_scale() const { return scale_embeddings ? static_cast<float>(std::sqrt(double(d_model))) : 1.0f; }
  bool pre_norms() const { return norm_placement != NormPlacement::post; }  // a norm before each sublayer
  bool post_norms() const { return norm_placement != NormPlacement::pre; }  // a norm after each sublayer's output
  int64_t norms_per_layer() const { return parallel_block() ? 1 : 2 * (pre_norms() + post_norms()); }
};

// How one step of it is run: the batch, the precision, the attention kernel, what is recomputed, data parallelism.
struct RunSettings {
  int64_t batch_size = 4;
  Precision precision = Precision::fp32;  // model/precision.h
  GradDType grad_dtype = GradDType::automatic;
  AttentionKind attention = AttentionKind::naive;
  Recompute recompute = Recompute::none;
  // Data parallel under mpirun (optim/data_parallel.h, optim/zero.h): 0 = DDP (gradients all-reduced), 1 = ZeRO-1
  // (+ AdamW state sharded across the ranks), 2 = + gradients sharded (reduce-scattered), 3 = + parameters sharded
  // (all-gathered per layer where used).
  int64_t zero_stage = 0;
  // DDP's gradient buckets (stages 0 and 1), PyTorch's bucket_cap_mb: MiB of float32 gradients per all-reduce.
  double bucket_cap_mb = 25;
  // Micro-batches per optimizer step (Hugging Face's and DeepSpeed's gradient_accumulation_steps): a step runs K
  // forward and backward passes of batch_size rows each, accumulating their gradients (the loss is their mean), then
  // one AdamW update. Data parallel: stages 0 and 1 reduce the gradients once per step (DDP's no_sync), stages 2 and 3
  // reduce-scatter them after every micro-batch and add them into the shard (FSDP's). 1 = none.
  int64_t gradient_accumulation_steps = 1;
};

// A model and how it is run: every field of both, by name (config.model.d_model, config.model.batch_size).
// Built as ModelConfig{ModelShape{.vocab_size = …}, RunSettings{.batch_size = …}}.
struct ModelConfig : ModelShape, RunSettings {
  const ModelShape& shape() const { return *this; }
  const RunSettings& run() const { return *this; }
  int64_t bucket_bytes() const { return static_cast<int64_t>(bucket_cap_mb * 1048576.0 + 0.5); }
  DTypePlan dtypes() const { return dtype_plan(precision, grad_dtype); }
  int64_t micro_batches() const { return gradient_accumulation_steps; }
};

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;           // outside the sqrt, as PyTorch: p -= lr · m̂ / (sqrt(v̂) + eps)
  double weight_decay = 0.01;  // decoupled: p -= lr · wd · p, applied to every parameter
};

struct TrainConfig {
  std::string preset = "tiny";
  ModelConfig model;
  AdamWConfig optim;
  uint64_t seed = 1234;
};

// Names of the presets: tiny, S, M, gpt2-small … gpt2-xl (the accounting problem's), openai-gpt2 … openai-gpt2-xl
// (as released), gpt3-6.7b, gpt3-13b, gpt3-175b, llama2-7b, llama2-13b,
// llama2-70b, llama3-8b, llama3-70b, llama3.1-405b, mistral-7b, smollm2-135m, tinyllama-1.1b, falcon-7b, olmo2-7b,
// gemma2-2b, qwen2.5-0.5b, qwen2.5-7b (shapes and sources in config.cpp).
std::vector<std::string> preset_names();
// Throws std::invalid_argument naming `preset` and listing the allowed names.
TrainConfig preset_config(std::string_view name);
// What is known of a preset beyond its shape: the released model's published parameter count (0 = none: a stand-in
// or reckon's own shape) and a preset of the same model in the other convention ("" = none): the accounting problem's
// gpt2-* (shared/seeds) and the released openai-gpt2*. Unknown names: {}.
struct PresetFacts {
  int64_t published_parameters = 0;
  std::string counterpart;
};
PresetFacts preset_facts(std::string_view name);

// Applies one `key=value` (keys: every ModelConfig/AdamWConfig field (precision: fp32, amp-bf16, bf16;
// grad_dtype: auto, fp32, bf16; attention: naive, flash;
// recompute: none, attention, full), `lr`, `weight_decay`, `beta1`, `beta2`,
// `adam_eps`, `seed`). Throws std::invalid_argument naming the key and what it accepts.
void apply_override(TrainConfig& config, std::string_view key_equals_value);
// Every field of `config` as the `key=value` lines apply_override takes (numbers in their shortest exact form),
// in the field table's order: applied to any preset, they rebuild `config` exactly. Checkpoints store this.
std::vector<std::string> config_overrides(const TrainConfig& config);
// The same fields as JSON, typed (integers, numbers, booleans, choice names): "preset", the model's fields and
// "seed" at top level, the optimizer's under "optim", each under its config key.
nlohmann::json config_json(const TrainConfig& config);
// Reads a TOML file: optional `preset = "..."` first, then the same keys at top level (or in [model] /
// [optim] tables). Throws std::invalid_argument with the file, key and reason.
// Strict: unknown keys and tables are refused (naming the nearest valid key), TOML types are checked per
// field, the file must be a regular file of at most 1 MiB, and nesting deeper than 8 levels is refused by a
// pre-scan before the TOML parser sees it.
TrainConfig load_config_file(const std::string& path);
// A config file read whole: refused (std::invalid_argument, naming `option` and the file) unless it is a regular
// file of at most 1 MiB.
std::string read_small_file(const std::string& path, std::string_view option);
// The same, on text already read (`path` names it in messages). The config-loader fuzzer's entry point.
TrainConfig parse_config_text(const std::string& text, const std::string& path);

// Throws std::invalid_argument for the first field outside its range: "num_heads: 5 does not divide
// d_model 64 ..." / "d_model: 0 is outside the allowed range [1, 65536]".
void validate(const TrainConfig& config);

inline const char* position_name(Position p) { return enum_name(kPositions, p); }
inline const char* attention_name(AttentionKind a) { return enum_name(kAttentionKinds, a); }
inline const char* recompute_name(Recompute r) { return enum_name(kRecomputes, r); }
// "MHA" (num_kv_heads = num_heads), "GQA k" (k key/value heads shared by groups of query heads), "MQA" (one).
std::string attention_heads_name(const ModelShape& m);
std::string describe(const ModelConfig& m);  // one line: "V 256, T 32, L 2, D 64, H 4, d_ff 256, swiglu, ..."

}  // namespace reckon
