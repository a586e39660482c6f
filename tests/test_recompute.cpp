// Recomputation (config field `recompute`): `attention` re-runs the attention core in backward,
// `full` re-runs each block's forward from its kept input (torch.utils.checkpoint). Both must give the same
// losses, gradients and parameters as `none` bit for bit — in float32 and in the bf16 modes, with either
// attention, over several AdamW steps (the weight-cast cache of amp-bf16 is rebuilt by the recompute). What
// forward keeps is checked by independent arithmetic on the allocator's bytes, and what the recompute phase
// runs against the forward phase's own counts. (Every byte and FLOP against the estimators: test_estimators'
// Reconcile suite and `reckon reconcile --sweep`, for every precision × attention × recompute.)
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/data.h"
#include "model/transformer.h"
#include "optim/step.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"
#include "runtime/machine.h"

namespace reckon {
namespace {

// T = 70: one full flash key block and a remainder; three layers; d_k = 16.
TrainConfig small(Precision precision, GradDType grads, AttentionKind attention, Recompute recompute,
                  FfnKind ffn = FfnKind::swiglu) {
  TrainConfig c;
  c.model = ModelConfig{ModelShape{.vocab_size = 64,
                                   .context_length = 70,
                                   .num_layers = 3,
                                   .d_model = 32,
                                   .num_heads = 4,
                                   // swiglu: groups of 2 query heads per K/V head; silu_mlp: multi-query, heads of 12
                                   .num_kv_heads = ffn == FfnKind::swiglu ? 2 : 1,
                                   .head_dim = ffn == FfnKind::swiglu ? 0 : 12,
                                   .d_ff = 48,
                                   .ffn = ffn,
                                   .tie_embeddings = ffn == FfnKind::silu_mlp,
                                   .position = Position::learned},
                        RunSettings{.batch_size = 2,
                                    .precision = precision,
                                    .grad_dtype = grads,
                                    .attention = attention,
                                    .recompute = recompute}};
  return c;
}

struct TrainedRun {
  std::vector<double> losses;
  std::vector<std::vector<uint8_t>> grads, params;  // raw bytes after the last step's backward / update
};

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  return std::vector<uint8_t>(p, p + t.numel() * dtype_bytes(t.dtype()));
}

// Three AdamW steps on three different batches; the gradients of the last step are read before its update.
TrainedRun train(const TrainConfig& config) {
  TrainingSession s(config);
  TokenData data = TokenData::random(config.model.vocab_size, 5);
  TrainedRun run;
  for (int64_t step = 0; step < 3; ++step) {
    data.fill_batch(s.tokens, s.targets, step);
    s.model.zero_grad();
    run.losses.push_back(s.model.forward(s.tokens, s.targets));
    s.model.backward();
    if (step == 2) {
      for (const Parameter& p : s.model.parameters()) run.grads.push_back(bytes_of(p.grad));
    }
    {
      PhaseScope phase(Phase::optimizer);
      s.optimizer.step();
    }
  }
  for (const Parameter& p : s.model.parameters()) run.params.push_back(bytes_of(p.value));
  return run;
}

TEST(Recompute, LossesGradientsAndParametersEqualNoRecomputeBitForBit) {
  set_num_threads(2);
  for (const auto [precision, grads] : precision_settings())
    for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash})
      for (FfnKind ffn : {FfnKind::swiglu, FfnKind::silu_mlp}) {
        if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
        const TrainedRun none = train(small(precision, grads, attention, Recompute::none, ffn));
        for (Recompute recompute : {Recompute::attention, Recompute::full}) {
          const TrainConfig config = small(precision, grads, attention, recompute, ffn);
          SCOPED_TRACE(describe(config.model));
          const TrainedRun r = train(config);
          ASSERT_EQ(r.losses.size(), none.losses.size());
          for (size_t i = 0; i < r.losses.size(); ++i) {
            EXPECT_EQ(std::memcmp(&r.losses[i], &none.losses[i], sizeof(double)), 0) << "loss of step " << i;
          }
          ASSERT_EQ(r.grads.size(), none.grads.size());
          for (size_t i = 0; i < r.grads.size(); ++i) {
            EXPECT_TRUE(r.grads[i] == none.grads[i]) << "gradient " << i;
            EXPECT_TRUE(r.params[i] == none.params[i]) << "parameter " << i;
          }
        }
      }
}

// What forward keeps until backward, measured as the allocator's activation bytes after forward, against
// arithmetic on the shapes (every size rounded up to 64 bytes):
//   attention − none: naive drops L·(B·H·T²) float32 probabilities, flash L·(B·H·T) float32 log-sum-exps;
//   full: the embedding output and every block's output (L + 1 float32 B·T·D tensors: each block's input, and
//         the last block's output as the final norm's input), the final norm's output and 1/rms, the logits.
TEST(Recompute, WhatForwardKeepsByArithmetic) {
  set_num_threads(2);
  auto aligned = [](int64_t bytes) { return (bytes + 63) / 64 * 64; };
  for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash}) {
    auto kept_after_forward = [&](Recompute recompute) {
      const TrainConfig config = small(Precision::fp32, GradDType::automatic, attention, recompute);
      TrainingSession s(config);
      TokenData::random(config.model.vocab_size, 5).fill_batch(s.tokens, s.targets, 0);
      const int64_t before = tracker().stats()[Category::activation].allocated_bytes.current;
      s.model.forward(s.tokens, s.targets);
      const int64_t kept = tracker().stats()[Category::activation].allocated_bytes.current - before;
      s.model.backward();
      EXPECT_EQ(tracker().stats()[Category::activation].allocated_bytes.current, before) << "backward frees it all";
      return kept;
    };
    const ModelConfig m = small(Precision::fp32, GradDType::automatic, attention, Recompute::none).model;
    const int64_t b = m.batch_size, t = m.context_length, l = m.num_layers, h = m.num_heads, n = b * t;
    const int64_t none = kept_after_forward(Recompute::none);
    const int64_t core = attention == AttentionKind::flash ? aligned(4 * b * h * t) : aligned(4 * b * h * t * t);
    EXPECT_EQ(none - kept_after_forward(Recompute::attention), l * core) << attention_name(attention);
    EXPECT_EQ(kept_after_forward(Recompute::full), (l + 1) * aligned(4 * n * m.d_model) + aligned(4 * n * m.d_model) +
                                                       aligned(4 * n) + aligned(4 * n * m.vocab_size))
        << attention_name(attention);
  }
}

// The recompute phase re-runs exactly the forward work of what it recomputes: under `full` every block op
// counts in recompute what it counted in forward (the norms: 2 of the 2·L + 1 are blocks'); under `attention`
// the attention core alone. FLOPs and bytes come from the ops' own counting, not from the estimators.
TEST(Recompute, RecomputePhaseRepeatsTheForwardCounts) {
  set_num_threads(2);
  for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash}) {
    for (Recompute recompute : {Recompute::none, Recompute::attention, Recompute::full}) {
      const TrainConfig config = small(Precision::fp32, GradDType::automatic, attention, recompute);
      SCOPED_TRACE(describe(config.model));
      const StepMeasurement step = measure_steady_step(config);
      auto get = [&](const char* op, Phase phase) {
        const auto it = step.counts.find(OpKey{op, phase});
        return it == step.counts.end() ? OpCount{} : it->second;
      };
      std::vector<std::string> recomputed;
      for (const auto& [key, count] : step.counts) {
        if (key.phase == Phase::recompute) recomputed.push_back(key.op);
      }
      if (recompute == Recompute::none) {
        EXPECT_TRUE(recomputed.empty());
        continue;
      }
      if (recompute == Recompute::attention) {
        EXPECT_EQ(recomputed, std::vector<std::string>{"attention"});
      } else {
        EXPECT_EQ(recomputed, (std::vector<std::string>{"attention", "linear", "residual", "rmsnorm", "swiglu"}));
      }
      for (const std::string& op : recomputed) {
        const OpCount fwd = get(op.c_str(), Phase::forward), again = get(op.c_str(), Phase::recompute);
        const int64_t l = config.model.num_layers;
        const int64_t num = op == "rmsnorm" ? 2 * l : 1, den = op == "rmsnorm" ? 2 * l + 1 : 1;
        EXPECT_EQ(again.calls * den, fwd.calls * num) << op;
        EXPECT_EQ(again.matmul_flops * den, fwd.matmul_flops * num) << op;
        EXPECT_EQ(again.other_flops * den, fwd.other_flops * num) << op;
        EXPECT_EQ(again.bytes_read * den, fwd.bytes_read * num) << op;
        EXPECT_EQ(again.bytes_written * den, fwd.bytes_written * num) << op;
        EXPECT_GT(again.calls, 0) << op;
      }
    }
  }
}

TEST(Recompute, ConfigFieldParsesAndBadValuesNameTheField) {
  TrainConfig c = preset_config("tiny");
  EXPECT_EQ(c.model.recompute, Recompute::none);
  apply_override(c, "recompute=full");
  EXPECT_EQ(c.model.recompute, Recompute::full);
  EXPECT_NE(describe(c.model).find("recompute full"), std::string::npos);
  apply_override(c, "recompute=attention");
  EXPECT_EQ(c.model.recompute, Recompute::attention);
  try {
    apply_override(c, "recompute=selective");
    FAIL() << "accepted recompute=selective";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(
        std::string(e.what()).find("recompute: 'selective' is not allowed, allowed values are none, attention, full"),
        std::string::npos)
        << e.what();
  }
  const TrainConfig from_toml = parse_config_text("preset = \"tiny\"\n[model]\nrecompute = \"full\"\n", "t.toml");
  EXPECT_EQ(from_toml.model.recompute, Recompute::full);
}

}  // namespace
}  // namespace reckon
