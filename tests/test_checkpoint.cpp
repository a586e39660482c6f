// optim/checkpoint: a run saved after k steps and resumed continues exactly as the uninterrupted run — losses
// and parameters bit for bit — in every precision (AdamW state, master weights, the step count of the bias
// correction and the data position all restored); a checkpoint of another model, or a file that is not a
// reckon checkpoint, is a clear error naming what differs.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "model/data.h"
#include "model/hf_checkpoint.h"
#include "tests/reference.h"
#include "optim/checkpoint.h"
#include "runtime/machine.h"

namespace reckon {
namespace {

TrainConfig config_in(Precision precision, GradDType grads) {
  TrainConfig c = preset_config("tiny");
  c.model.precision = precision;
  c.model.grad_dtype = grads;
  c.model.attention = AttentionKind::flash;
  c.optim.lr = 3e-3;
  c.seed = 99;
  return c;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  return std::vector<uint8_t>(p, p + t.numel() * dtype_bytes(t.dtype()));
}

TEST(Checkpoint, ResumedRunEqualsTheUninterruptedOneBitForBit) {
  set_num_threads(2);
  for (const auto [precision, grads] : precision_settings()) {
    if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
    const TrainConfig config = config_in(precision, grads);
    SCOPED_TRACE(describe(config.model));
    TokenData data = TokenData::random(config.model.vocab_size, 5);
    std::vector<double> straight;
    std::vector<std::vector<uint8_t>> straight_params;
    {
      TrainingSession run(config);
      for (int64_t step = 0; step < 6; ++step) {
        data.fill_batch(run.tokens, run.targets, step);
        straight.push_back(run.step());
      }
      for (const Parameter& p : run.model.parameters()) straight_params.push_back(bytes_of(p.value));
    }
    std::string saved;
    {
      TrainingSession run(config);
      for (int64_t step = 0; step < 3; ++step) {
        data.fill_batch(run.tokens, run.targets, step);
        EXPECT_EQ(run.step(), straight[static_cast<size_t>(step)]);
      }
      saved = checkpoint_bytes(run, config, 3, "random");
    }
    const Safetensors file = parse_safetensors(saved, "ckpt.safetensors");
    const CheckpointMeta meta = read_checkpoint_meta(file, "ckpt.safetensors");
    EXPECT_EQ(meta.steps, 3);
    EXPECT_EQ(meta.optimizer_steps, 3);
    EXPECT_EQ(meta.data, "random");
    EXPECT_EQ(describe(meta.config.model), describe(config.model));
    EXPECT_EQ(config_overrides(meta.config), config_overrides(config));
    TrainingSession resumed(meta.config);
    restore_checkpoint(resumed, file, meta, "ckpt.safetensors");
    for (int64_t step = 3; step < 6; ++step) {
      data.fill_batch(resumed.tokens, resumed.targets, step);
      const double loss = resumed.step();
      EXPECT_EQ(std::memcmp(&loss, &straight[static_cast<size_t>(step)], sizeof loss), 0) << "step " << step + 1;
    }
    size_t i = 0;
    for (const Parameter& p : resumed.model.parameters())
      EXPECT_TRUE(bytes_of(p.value) == straight_params[i++]) << p.name;
    // Master weights (bf16 mode) are in the file as float32 beside the bf16 parameters.
    if (precision == Precision::bf16) {
      EXPECT_NE(file.find("tok_emb.weight.master"), nullptr);
    }
    EXPECT_NE(file.find("tok_emb.weight.exp_avg_sq"), nullptr);
  }
}

TEST(Checkpoint, AnotherModelOrAForeignFileIsAClearError) {
  set_num_threads(2);
  const TrainConfig config = config_in(Precision::fp32, GradDType::automatic);
  TrainingSession run(config);
  TokenData::random(config.model.vocab_size, 5).fill_batch(run.tokens, run.targets, 0);
  run.step();
  const Safetensors file = parse_safetensors(checkpoint_bytes(run, config, 1, "random"), "c.safetensors");
  const CheckpointMeta meta = read_checkpoint_meta(file, "c.safetensors");
  TrainConfig wider = config;
  wider.model.d_ff = 128;
  TrainingSession other(wider);
  try {
    restore_checkpoint(other, file, meta, "c.safetensors");
    FAIL() << "restored into another shape";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "c.safetensors: tensor 'layers.0.ffn.w1.weight' has shape [256, 64], expected [128, 64]"),
              std::string::npos)
        << e.what();
  }
  Tensor t = Tensor::zeros({2}, Category::temporary, "t");
  const Safetensors foreign = parse_safetensors(serialize_safetensors({{"x", t}}, {{"format", "pt"}}), "f.safetensors");
  try {
    read_checkpoint_meta(foreign, "f.safetensors");
    FAIL() << "read a foreign file as a checkpoint";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("f.safetensors: a Hugging Face-format file"), std::string::npos) << e.what();
  }
  const Safetensors tf_file = parse_safetensors(serialize_safetensors({{"x", t}}, {{"format", "tf"}}), "g.safetensors");
  try {
    read_checkpoint_meta(tf_file, "g.safetensors");
    FAIL() << "read a foreign file as a checkpoint";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("g.safetensors: not a reckon checkpoint (metadata format is 'tf'"),
              std::string::npos)
        << e.what();
  }
}

// Counts in the metadata are decimal digits within the range the resumed run needs (steps + kMaxStepsPerRun
// steps' token positions fit int64; optimizer_steps ≤ steps); the config gives each key once and the model's shape.
TEST(Checkpoint, MetadataCountsAndConfigAreStrict) {
  set_num_threads(2);
  const TrainConfig config = config_in(Precision::fp32, GradDType::automatic);
  TrainingSession run(config);
  TokenData::random(config.model.vocab_size, 5).fill_batch(run.tokens, run.targets, 0);
  run.step();
  const Safetensors good = parse_safetensors(checkpoint_bytes(run, config, 1, "random"), "c.safetensors");
  // tiny: batch 4 × context 32 = 128 token positions a step; (2^63 − 1) / 128 = 2^56 − 1.
  ASSERT_EQ(config.model.batch_size * config.model.context_length, 128);
  const int64_t max_steps = (int64_t{1} << 56) - 1 - 10'000'000;
  const auto meta_with = [&](const std::string& key, const std::string& value) {
    Safetensors file = good;
    file.metadata[key] = value;
    return read_checkpoint_meta(file, "c.safetensors");
  };
  EXPECT_EQ(meta_with("steps", std::to_string(max_steps)).steps, max_steps);
  for (const std::string& bad :
       std::vector<std::string>{"+5", " 5", "5 ", "", "-1", "0x10", "1e3", "5.0", std::to_string(max_steps + 1),
                                "9223372036854775807", "99999999999999999999"}) {
    try {
      meta_with("steps", bad);
      FAIL() << "accepted steps '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()), fmt::format("c.safetensors: checkpoint metadata 'steps' is '{}', not an integer "
                                                   "in [0, {}]",
                                                   bad, max_steps));
    }
  }
  EXPECT_THROW(meta_with("optimizer_steps", "2"), std::invalid_argument);  // more AdamW steps than training steps
  EXPECT_EQ(meta_with("optimizer_steps", "0").optimizer_steps, 0);
  const std::string lines = good.metadata.at("config");
  for (const auto& [config_text, message] : {std::pair<std::string, std::string>{"", "no 'vocab_size'"},
                                             {lines + "d_model=64\n", "'d_model' is given twice"},
                                             {lines.substr(lines.find("num_layers=")), "no 'vocab_size'"},
                                             {lines + "colour=blue\n", "unknown config key 'colour'"}}) {
    try {
      meta_with("config", config_text);
      FAIL() << "accepted config '" << config_text << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("c.safetensors: checkpoint config: " + message), std::string::npos)
          << e.what();
    }
  }
}

// model/hf_checkpoint: the layouts of the released models — every parameter in exactly one tensor, shapes as
// transformers keeps them (GPT-2's Conv1D c_attn is (D, 3D)), the tied head absent; what fits no layout refused
// naming the field.
TEST(HfCheckpoint, LayoutsOfTheReleasedModels) {
  {
    const ModelConfig m = preset_config("openai-gpt2").model;
    const HfStateDict hf = hf_state_dict(m);
    EXPECT_EQ(hf.architecture, "GPT2LMHeadModel");
    EXPECT_EQ(hf.tensors.size(), 2u + 12u * 12u + 2u);  // wte, wpe; 12 a layer; ln_f's two
    int64_t total = 0;
    for (const HfTensorSpec& t : hf.tensors) total += checked_numel(t.shape, t.name);
    EXPECT_EQ(total, 124439808LL);
    const auto find = [&](const std::string& name) {
      for (const HfTensorSpec& t : hf.tensors)
        if (t.name == name) return t;
      ADD_FAILURE() << name;
      return HfTensorSpec{};
    };
    EXPECT_EQ(find("transformer.h.0.attn.c_attn.weight").shape, (Shape{768, 2304}));
    EXPECT_TRUE(find("transformer.h.0.attn.c_attn.weight").conv1d);
    EXPECT_EQ(find("transformer.h.11.attn.c_attn.bias").shape, (Shape{2304}));
    EXPECT_EQ(find("transformer.h.3.mlp.c_fc.weight").shape, (Shape{768, 3072}));
    EXPECT_EQ(find("transformer.h.3.mlp.c_proj.weight").shape, (Shape{3072, 768}));
    EXPECT_EQ(find("transformer.wpe.weight").shape, (Shape{1024, 768}));
  }
  for (const auto& [preset, architecture, count] : {std::tuple{"llama2-70b", "LlamaForCausalLM", 68976648192LL},
                                                    std::tuple{"mistral-7b", "MistralForCausalLM", 7241732096LL},
                                                    std::tuple{"qwen2.5-0.5b", "Qwen2ForCausalLM", 494032768LL},
                                                    std::tuple{"olmo2-7b", "Olmo2ForCausalLM", 7298617344LL},
                                                    std::tuple{"gemma2-2b", "Gemma2ForCausalLM", 2614341888LL}}) {
    SCOPED_TRACE(preset);
    const HfStateDict hf = hf_state_dict(preset_config(preset).model);
    EXPECT_EQ(hf.architecture, architecture);
    int64_t total = 0;
    for (const HfTensorSpec& t : hf.tensors) total += checked_numel(t.shape, t.name);
    EXPECT_EQ(total, count);
  }
  const HfStateDict l70 = hf_state_dict(preset_config("llama2-70b").model);
  EXPECT_EQ(l70.tensors[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(l70.tensors[3].shape, (Shape{1024, 8192}));  // k_proj: 8 K/V heads of 128
  EXPECT_EQ(l70.tensors.back().name, "lm_head.weight");
  using testing_ref::expect_invalid;
  expect_invalid([] { hf_state_dict(preset_config("tiny").model); }, {"--save-format hf: position: none"});
  expect_invalid([] { hf_state_dict(preset_config("falcon-7b").model); }, {"block", "sequential"});
  ModelConfig gpt2 = preset_config("openai-gpt2").model;
  gpt2.mlp_bias = false;
  expect_invalid([&] { hf_state_dict(gpt2); }, {"mlp_bias", "c_fc"});
}

// The tensors of a model into an HF file and back into a fresh model of either precision: every value restored
// (bf16 from a float32 file rounded once, float32 from bf16 exactly); a file missing a tensor, misshapen, or with a
// foreign one refused naming it; the buffers transformers skips are skipped and reported.
TEST(HfCheckpoint, RoundTripConversionAndRefusals) {
  set_num_threads(2);
  TrainConfig c = preset_config("tiny");
  c.model.position = Position::rope;
  c.model.num_kv_heads = 2;
  c.model.attention_bias = AttentionBias::qkv;
  TrainingSession a(c);
  const std::string bytes = hf_checkpoint_bytes(a, c, 0);
  const Safetensors file = parse_safetensors(bytes, "a.safetensors");
  EXPECT_EQ(file.metadata.at("format"), "pt");
  EXPECT_EQ(file.metadata.at("architecture"), "Qwen2ForCausalLM");
  EXPECT_FALSE(is_reckon_checkpoint(file));
  for (const Precision precision : {Precision::fp32, Precision::bf16}) {
    if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
    TrainConfig bc = c;
    bc.model.precision = precision;
    bc.seed = 7;  // other weights until loaded
    TrainingSession b(bc);
    std::vector<Tensor> values;
    for (const Parameter& p : b.model.parameters()) values.push_back(p.value);
    const HfLoadReport r = load_hf_tensors(file, "a", hf_state_dict(bc.model), b.model.layout(), values);
    EXPECT_TRUE(r.ignored.empty());
    for (size_t i = 0; i < values.size(); ++i) {
      const Tensor& want = a.model.parameters()[i].value;
      for (int64_t e = 0; e < want.numel(); ++e) {
        const float w = want.data()[e];
        const float got = precision == Precision::bf16 ? to_float(values[i].data_bf16()[e]) : values[i].data()[e];
        ASSERT_EQ(got, precision == Precision::bf16 ? to_float(to_bf16(w)) : w) << a.model.parameters()[i].name;
      }
    }
  }
  std::vector<Tensor> values;
  for (const Parameter& p : a.model.parameters()) values.push_back(p.value);
  const HfStateDict hf = hf_state_dict(c.model);
  auto file_with = [&](const std::string& drop, const std::string& add, const Shape& shape) {
    std::vector<std::pair<std::string, Tensor>> ts;
    for (auto& [name, t] : hf_tensors(hf, a.model.layout(), values))
      if (name != drop) ts.emplace_back(name, t);
    if (!add.empty()) ts.emplace_back(add, Tensor::zeros(shape, Category::temporary, "x"));
    return parse_safetensors(serialize_safetensors(ts, {{"format", "pt"}}), "f");
  };
  using testing_ref::expect_invalid;
  expect_invalid([&] { load_hf_tensors(file_with("model.norm.weight", "", {}), "f", hf, a.model.layout(), values); },
                 {"no tensor 'model.norm.weight' or 'norm.weight'", "Qwen2ForCausalLM"});
  expect_invalid(
      [&] {
        load_hf_tensors(file_with("model.norm.weight", "model.norm.weight", {65}), "f", hf, a.model.layout(), values);
      },
      {"'model.norm.weight' has shape [65]", "[64]"});
  expect_invalid([&] { load_hf_tensors(file_with("", "model.extra.weight", {2}), "f", hf, a.model.layout(), values); },
                 {"'model.extra.weight' is not part of this model"});
  const HfLoadReport r = load_hf_tensors(file_with("", "model.layers.1.self_attn.rotary_emb.inv_freq", {8}), "f", hf,
                                         a.model.layout(), values);
  EXPECT_EQ(r.ignored, std::vector<std::string>{"model.layers.1.self_attn.rotary_emb.inv_freq"});
  // --resume given a Hugging Face file: a clear error pointing to --init-from.
  expect_invalid([&] { read_checkpoint_meta(file, "a.safetensors"); }, {"Hugging Face-format file", "--init-from"});
}
}  // namespace
}  // namespace reckon
