// optim/checkpoint: a run saved after k steps and resumed continues exactly as the uninterrupted run — losses
// and parameters bit for bit — in every precision (AdamW state, master weights, the step count of the bias
// correction and the data position all restored); a checkpoint of another model, or a file that is not a
// reckon checkpoint, is a clear error naming what differs.
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/data.h"
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
    EXPECT_NE(std::string(e.what()).find("f.safetensors: not a reckon checkpoint (metadata format is 'pt'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace reckon
