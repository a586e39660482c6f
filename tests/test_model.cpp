// model/ and optim/: whole-model gradients vs finite differences of a float64 reference model, falling
// losses, determinism, the allocator's view of parameters / gradients / optimizer state, AdamW vs PyTorch's
// update formula, config validation.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/data.h"
#include "model/transformer.h"
#include "estimators/memory.h"
#include "optim/adamw.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "runtime/random.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using namespace testing_ref;

class Model : public ::testing::Test {
 protected:
  void SetUp() override {
    set_num_threads(2);
    counters().reset();
  }
};

// ================================================================== float64 reference model (plain loops)

using Params = std::map<std::string, Vec>;
// A parameter that may be absent (a bias): empty when the model has none.
Vec optional_param(const Params& p, const std::string& key) {
  const auto it = p.find(key);
  return it == p.end() ? Vec{} : it->second;
}

// The config's norm over rows of x: "<name>.weight" (and "<name>.bias" when the model has it).
Vec norm_ref(const Params& p, const ModelConfig& c, const Vec& x, const std::string& name, int64_t n) {
  if (c.norm == NormKind::layernorm)
    return layernorm_ref(x, p.at(name + ".weight"), optional_param(p, name + ".bias"), n, c.d_model, c.norm_eps);
  if (!c.norm_unit_offset) return rmsnorm_ref(x, p.at(name + ".weight"), n, c.d_model, c.norm_eps);
  Vec gain = p.at(name + ".weight");  // Gemma's RMSNorm: x̂ · (1 + w)
  for (double& g : gain) g += 1.0;
  return rmsnorm_ref(x, gain, n, c.d_model, c.norm_eps);
}

double model_ref_loss(const Params& p, const ModelConfig& c, const std::vector<int32_t>& tokens,
                      const std::vector<int32_t>& targets, int64_t b, int64_t t) {
  const int64_t d = c.d_model, n = b * t;
  Vec x(static_cast<size_t>(n * d));
  const Vec& tok = p.at("tok_emb.weight");
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      x[i * d + j] = tok[tokens[i] * d + j] * static_cast<double>(c.embedding_scale());
      if (c.position == Position::learned) x[i * d + j] += p.at("pos_emb.weight")[(i % t) * d + j];
    }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string pre = "layers." + std::to_string(l) + ".";
    const Vec h = c.pre_norms() ? norm_ref(p, c, x, pre + "attn_norm", n) : x;
    const int64_t qw = c.q_width(), kvw = c.kv_width();
    Vec q = linear_ref(h, p.at(pre + "attn.wq.weight"), n, d, qw);
    add_bias_ref(q, optional_param(p, pre + "attn.wq.bias"));
    Vec k = linear_ref(h, p.at(pre + "attn.wk.weight"), n, d, kvw);
    add_bias_ref(k, optional_param(p, pre + "attn.wk.bias"));
    if (c.qk_norm) {  // over the whole projection, before the rotation
      auto gain = [&](const std::string& key) {
        Vec g = p.at(key);
        if (c.norm_unit_offset) {
          for (double& x : g) x += 1.0;
        }
        return g;
      };
      q = rmsnorm_ref(q, gain(pre + "attn.q_norm.weight"), n, qw, c.norm_eps);
      k = rmsnorm_ref(k, gain(pre + "attn.k_norm.weight"), n, kvw, c.norm_eps);
    }
    if (c.position == Position::rope) {
      q = rope_ref(q, n, t, c.num_heads, c.head_size(), c.rope_theta);
      k = rope_ref(k, n, t, c.kv_heads(), c.head_size(), c.rope_theta);
    }
    Vec v = linear_ref(h, p.at(pre + "attn.wv.weight"), n, d, kvw);
    add_bias_ref(v, optional_param(p, pre + "attn.wv.bias"));
    const Vec ctx = attention_ref(q, k, v, b, t, qw, c.num_heads, c.kv_heads(), 0, 0,
                                  c.position == Position::alibi ? c.alibi_bias_max : 0.0);
    Vec o = linear_ref(ctx, p.at(pre + "attn.wo.weight"), n, qw, d);
    add_bias_ref(o, optional_param(p, pre + "attn.wo.bias"));
    if (c.post_norms()) o = norm_ref(p, c, o, pre + "attn_post_norm", n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    // A parallel block's ffn reads the same norm of the layer's input as attention (x before o was added).
    const Vec h2 = c.block == Block::parallel ? h : c.pre_norms() ? norm_ref(p, c, x, pre + "ffn_norm", n) : x;
    Vec f = ffn_ref(h2, p.at(pre + "ffn.w1.weight"), optional_param(p, pre + "ffn.w3.weight"),
                    p.at(pre + "ffn.w2.weight"), n, d, c.d_ff, c.ffn, optional_param(p, pre + "ffn.w1.bias"),
                    optional_param(p, pre + "ffn.w3.bias"), optional_param(p, pre + "ffn.w2.bias"));
    if (c.post_norms()) f = norm_ref(p, c, f, pre + "ffn_post_norm", n);
    for (size_t i = 0; i < x.size(); ++i) x[i] += f[i];
  }
  const Vec hf = norm_ref(p, c, x, "final_norm", n);
  const Vec& head = c.tie_embeddings ? p.at("tok_emb.weight") : p.at("lm_head.weight");
  return cross_entropy_ref(linear_ref(hf, head, n, d, c.vocab_size), targets, n, c.vocab_size);
}

struct GradCase {
  FfnKind ffn;
  bool tied;
  Position position;
  AttentionKind attention = AttentionKind::naive;
  int64_t heads = 2, kv_heads = 0, head_dim = 0;  // 0: the defaults (as many as heads, D / H)
  bool mlp_bias = false;
  AttentionBias attention_bias = AttentionBias::none;
  NormKind norm = NormKind::rmsnorm;
  bool norm_bias = false;
  Block block = Block::sequential;
  NormPlacement placement = NormPlacement::pre;
  bool gemma = false;  // norm_unit_offset and scale_embeddings
  bool qk_norm = false;
};
void PrintTo(const GradCase& g, std::ostream* os) {
  *os << ffn_kind_name(g.ffn) << (g.tied ? "_tied" : "_untied") << "_pos_" << position_name(g.position) << "_"
      << attention_name(g.attention) << "_H" << g.heads << "_KV" << g.kv_heads << "_hd" << g.head_dim
      << (g.mlp_bias ? "_mlp_bias" : "") << "_attn_bias_" << enum_name(kAttentionBiases, g.attention_bias) << "_"
      << norm_kind_name(g.norm) << (g.norm_bias ? "_bias" : "") << "_" << enum_name(kBlocks, g.block) << "_"
      << enum_name(kNormPlacements, g.placement) << (g.gemma ? "_gemma" : "") << (g.qk_norm ? "_qk_norm" : "");
}

class WholeModelGradient : public Model, public ::testing::WithParamInterface<GradCase> {};

TEST_P(WholeModelGradient, EveryParameterMatchesFiniteDifferencesInDouble) {
  const GradCase gc = GetParam();
  ModelConfig c;
  c.vocab_size = 13;
  c.context_length = 6;
  c.num_layers = 2;
  c.d_model = 8;
  c.num_heads = gc.heads;
  c.num_kv_heads = gc.kv_heads;
  c.head_dim = gc.head_dim;
  c.d_ff = 12;
  c.ffn = gc.ffn;
  c.mlp_bias = gc.mlp_bias;
  c.norm = gc.norm;
  c.norm_bias = gc.norm_bias;
  c.block = gc.block;
  c.norm_placement = gc.placement;
  c.norm_unit_offset = c.scale_embeddings = gc.gemma;
  c.qk_norm = gc.qk_norm;
  c.attention_bias = gc.attention_bias;
  c.tie_embeddings = gc.tied;
  c.position = gc.position;
  c.rope_theta = 10.0;
  c.attention = gc.attention;
  c.batch_size = 2;
  const int64_t b = 2, t = 5;  // T < context_length: positions use only the first T rows
  Transformer model(c, 7);
  // Larger weights than the 0.02 init, so every path carries a gradient well above float rounding.
  Rng rng(99);
  for (Parameter& p : model.parameters()) {
    for (int64_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] += static_cast<float>(0.3 * rng.normal());
  }
  const auto tokens = random_ids(b * t, c.vocab_size, 3), targets = random_ids(b * t, c.vocab_size, 4);
  Tensor tok = int_tensor(tokens, {b, t}, "batch.tokens"), tgt = int_tensor(targets, {b, t}, "batch.targets");

  model.zero_grad();
  const double loss = model.forward(tok, tgt);
  model.backward();

  Params ref;
  for (const Parameter& p : model.parameters()) ref[p.name] = vec_from(p.value);
  EXPECT_NEAR(loss, model_ref_loss(ref, c, tokens, targets, b, t), 1e-5);
  for (const Parameter& p : model.parameters()) {
    const Vec fd = fd_grad(
        [&](const Vec& x) {
          Params q = ref;
          q[p.name] = x;
          return model_ref_loss(q, c, tokens, targets, b, t);
        },
        ref[p.name]);
    if (p.name.ends_with("attn.wk.bias") && c.position != Position::rope) {
      // A key bias adds q·b_k to every score of a row (unrotated: no RoPE): softmax is blind to it, its gradient is
      // zero up to rounding.
      for (size_t i = 0; i < fd.size(); ++i) {
        EXPECT_NEAR(p.grad.data()[i], 0.0, 1e-6) << p.name;
        EXPECT_NEAR(fd[i], 0.0, 1e-6) << p.name;
      }
      continue;
    }
    EXPECT_LE(rel_err(vec_from(p.grad), fd), 2e-4) << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, WholeModelGradient,
    ::testing::Values(
        GradCase{FfnKind::swiglu, false, Position::none}, GradCase{FfnKind::swiglu, true, Position::none},
        GradCase{FfnKind::silu_mlp, false, Position::none}, GradCase{FfnKind::silu_mlp, true, Position::learned},
        GradCase{FfnKind::swiglu, false, Position::learned},
        GradCase{FfnKind::swiglu, false, Position::none, AttentionKind::flash},
        GradCase{FfnKind::silu_mlp, true, Position::learned, AttentionKind::flash},
        // shared K/V heads and head widths apart from D / H
        GradCase{FfnKind::swiglu, false, Position::none, AttentionKind::naive, 4, 2},
        GradCase{FfnKind::swiglu, false, Position::none, AttentionKind::flash, 4, 1, 3},
        GradCase{FfnKind::silu_mlp, true, Position::none, AttentionKind::naive, 2, 1, 6},
        GradCase{FfnKind::swiglu, true, Position::learned, AttentionKind::flash, 4, 2, 5},
        // rotary positions (base 10, so that 5 positions turn far)
        GradCase{FfnKind::swiglu, false, Position::rope, AttentionKind::naive, 4, 2},
        GradCase{FfnKind::silu_mlp, true, Position::rope, AttentionKind::flash, 2, 1, 6},
        // GELU MLPs (exact and tanh, gated and plain) and biases on every linear (GPT-2's layout)
        GradCase{FfnKind::gelu_tanh_mlp, true, Position::learned, AttentionKind::naive, 2, 0, 0, true,
                 AttentionBias::qkvo, NormKind::layernorm, true},
        GradCase{FfnKind::gelu_tanh_mlp, true, Position::learned, AttentionKind::flash, 2, 0, 0, true,
                 AttentionBias::qkvo, NormKind::layernorm, true},
        GradCase{FfnKind::swiglu, false, Position::rope, AttentionKind::naive, 4, 2, 0, false, AttentionBias::none,
                 NormKind::layernorm, false},
        GradCase{FfnKind::geglu_tanh, true, Position::rope, AttentionKind::flash, 4, 2, 6},
        GradCase{FfnKind::gelu_mlp, false, Position::rope, AttentionKind::flash, 4, 1, 0, false, AttentionBias::qkv},
        GradCase{FfnKind::geglu, false, Position::none, AttentionKind::naive, 2, 0, 0, true},
        // parallel blocks (Falcon-7B's: one LayerNorm, multi-query, exact GELU, RoPE; and gated, biased)
        GradCase{FfnKind::gelu_mlp, true, Position::rope, AttentionKind::naive, 2, 1, 0, false, AttentionBias::none,
                 NormKind::layernorm, true, Block::parallel},
        GradCase{FfnKind::swiglu, false, Position::learned, AttentionKind::flash, 4, 2, 0, true, AttentionBias::qkvo,
                 NormKind::rmsnorm, false, Block::parallel},
        // norms after each sublayer (OLMo-2) and before and after (Gemma-2's sandwich)
        GradCase{FfnKind::swiglu, false, Position::rope, AttentionKind::naive, 4, 4, 0, false, AttentionBias::none,
                 NormKind::rmsnorm, false, Block::sequential, NormPlacement::post},
        GradCase{FfnKind::gelu_mlp, true, Position::learned, AttentionKind::flash, 2, 1, 0, true, AttentionBias::qkvo,
                 NormKind::layernorm, true, Block::sequential, NormPlacement::post},
        GradCase{FfnKind::geglu_tanh, true, Position::rope, AttentionKind::flash, 4, 2, 6, false, AttentionBias::none,
                 NormKind::rmsnorm, false, Block::sequential, NormPlacement::sandwich},
        // Gemma-2's whole block: sandwich norms scaling by 1 + w, embeddings × √D, tied
        GradCase{FfnKind::geglu_tanh, true, Position::rope, AttentionKind::naive, 4, 2, 6, false, AttentionBias::none,
                 NormKind::rmsnorm, false, Block::sequential, NormPlacement::sandwich, true},
        // OLMo-2's: norms after the sublayers, RMSNorm over the q and k projections before RoPE (and with (1 + w)
        // gains)
        GradCase{FfnKind::swiglu, false, Position::rope, AttentionKind::naive, 4, 2, 0, false, AttentionBias::none,
                 NormKind::rmsnorm, false, Block::sequential, NormPlacement::post, false, true},
        GradCase{FfnKind::swiglu, true, Position::rope, AttentionKind::flash, 2, 1, 6, false, AttentionBias::qkv,
                 NormKind::rmsnorm, false, Block::sequential, NormPlacement::pre, true, true},
        // MPT's: ALiBi (3 heads: interleaved slopes), LayerNorm without β, exact GELU, tied; and ALiBi over groups
        GradCase{FfnKind::gelu_mlp, true, Position::alibi, AttentionKind::naive, 3, 0, 4, false, AttentionBias::none,
                 NormKind::layernorm, false},
        GradCase{FfnKind::swiglu, false, Position::alibi, AttentionKind::flash, 4, 2}));

// ================================================================== training behaviour

std::vector<double> train_losses(const TrainConfig& config, TokenData& data, int64_t steps, bool same_batch) {
  Transformer model(config.model, config.seed);
  AdamW opt(model.parameters(), config.optim);
  const ModelConfig& m = config.model;
  Tensor tok = Tensor::empty({m.batch_size, m.context_length}, Category::activation, "batch.tokens", DType::i32);
  Tensor tgt = Tensor::empty({m.batch_size, m.context_length}, Category::activation, "batch.targets", DType::i32);
  std::vector<double> losses;
  for (int64_t s = 0; s < steps; ++s) {
    data.fill_batch(tok, tgt, same_batch ? 0 : s);
    model.zero_grad();
    losses.push_back(model.forward(tok, tgt));
    model.backward();
    opt.step();
  }
  return losses;
}

TEST_F(Model, LossFallsOnARepeatedBatch) {
  TrainConfig config = preset_config("tiny");
  config.optim.lr = 3e-3;
  TokenData data = TokenData::random(config.model.vocab_size, 5);
  const std::vector<double> losses = train_losses(config, data, 60, /*same_batch=*/true);
  const double ln_v = std::log(static_cast<double>(config.model.vocab_size));
  EXPECT_NEAR(losses.front(), ln_v, 0.1);  // the 0.02 init predicts nearly uniformly
  EXPECT_LT(losses.back(), ln_v / 2) << "after 60 steps on one batch";
}

TEST_F(Model, LossOnRealTextFallsWellBelowUniform) {
  TrainConfig config = preset_config("tiny");
  TokenData data = TokenData::from_file("/usr/share/common-licenses/GPL-3", config.model.vocab_size,
                                        config.model.context_length, int64_t{1} << 30);
  const std::vector<double> losses = train_losses(config, data, 200, false);
  double last10 = 0;
  for (size_t i = losses.size() - 10; i < losses.size(); ++i) last10 += losses[i] / 10;
  EXPECT_LT(last10, 0.6 * std::log(256.0)) << "mean loss of steps 191-200";
}

TEST(Data, OnlyRegularFilesWithinTheBudget) {
  const std::string gpl = "/usr/share/common-licenses/GPL-3";  // 35,149 bytes
  EXPECT_EQ(TokenData::from_file(gpl, 256, 32, 35149).size(), 35149);
  expect_invalid([&] { TokenData::from_file(gpl, 256, 32, 35148); },
                 {"--data: '/usr/share/common-licenses/GPL-3' is 35149 bytes", "at most 35148 bytes"});
  expect_invalid([&] { TokenData::from_file("/dev/zero", 256, 32, 1 << 20); }, {"'/dev/zero' is not a regular file"});
  expect_invalid([&] { TokenData::from_file("/tmp", 256, 32, 1 << 20); }, {"not a regular file (it is a folder)"});
  expect_invalid([&] { TokenData::from_file("/no/such", 256, 32, 1 << 20); }, {"--data: cannot read file '/no/such'"});
}

TEST_F(Model, SameSeedAndThreadsGiveIdenticalLosses) {
  TrainConfig config = preset_config("tiny");
  TokenData data = TokenData::random(config.model.vocab_size, 11);
  const auto a = train_losses(config, data, 5, false);
  const auto b = train_losses(config, data, 5, false);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i;  // bit for bit
  config.seed += 1;
  const auto c = train_losses(config, data, 5, false);
  EXPECT_NE(a[0], c[0]);
}

// ================================================================== memory: what the model says it allocated

TEST_F(Model, AllocatorSeesExactlyTheParametersGradientsAndOptimizerState) {
  TrainConfig config = preset_config("tiny");
  config.model.position = Position::learned;
  const ModelConfig& m = config.model;
  const MemoryStats before = tracker().stats();
  {
    Transformer model(m, 1);
    AdamW opt(model.parameters(), config.optim);
    // Independent arithmetic: every tensor of the model, each rounded up to 64 bytes.
    auto block = [](int64_t elems) { return (4 * elems + 63) / 64 * 64; };
    const int64_t d = m.d_model, f = m.d_ff, v = m.vocab_size;
    const int64_t per_layer = 2 * block(d) + 4 * block(d * d) + 3 * block(f * d);
    const int64_t expected =
        block(v * d) + block(m.context_length * d) + m.num_layers * per_layer + block(d) + block(v * d);
    const int64_t count = v * d + m.context_length * d + m.num_layers * (2 * d + 4 * d * d + 3 * f * d) + d + v * d;
    EXPECT_EQ(model.num_parameters(), count);
    MemoryStats s = tracker().stats();
    EXPECT_EQ(s[Category::parameter].allocated_bytes.current - before[Category::parameter].allocated_bytes.current,
              expected);
    EXPECT_EQ(s[Category::gradient].allocated_bytes.current - before[Category::gradient].allocated_bytes.current,
              expected);
    EXPECT_EQ(s[Category::optimizer_state].allocated_bytes.current,
              before[Category::optimizer_state].allocated_bytes.current)
        << "AdamW state is lazy";

    Tensor tok = Tensor::zeros({m.batch_size, m.context_length}, Category::activation, "batch.tokens", DType::i32);
    Tensor tgt = Tensor::zeros({m.batch_size, m.context_length}, Category::activation, "batch.targets", DType::i32);
    const int64_t act_before = tracker().stats()[Category::activation].allocated_bytes.current;
    model.forward(tok, tgt);
    model.backward();
    opt.step();
    s = tracker().stats();
    EXPECT_EQ(s[Category::optimizer_state].allocated_bytes.current -
                  before[Category::optimizer_state].allocated_bytes.current,
              2 * expected);
    // Every activation and temporary is gone after backward: only the batch remains.
    EXPECT_EQ(s[Category::activation].allocated_bytes.current, act_before);
    EXPECT_EQ(s[Category::temporary].allocated_bytes.current, before[Category::temporary].allocated_bytes.current);
    EXPECT_EQ(tracker().live_bytes_with_prefix("layers.0.attn.wq.weight.exp_avg"), 2 * block(d * d));  // + _sq

    // State-dict style names.
    std::vector<std::string> names;
    for (const Parameter& p : model.parameters()) names.push_back(p.name);
    EXPECT_EQ(names.front(), "tok_emb.weight");
    EXPECT_EQ(names[1], "pos_emb.weight");
    EXPECT_EQ(names[2], "layers.0.attn_norm.weight");
    EXPECT_EQ(names[3], "layers.0.attn.wq.weight");
    EXPECT_EQ(names.back(), "lm_head.weight");
  }
  const MemoryStats after = tracker().stats();
  EXPECT_EQ(after.total.allocated_bytes.current, before.total.allocated_bytes.current) << "everything freed";
}

// ================================================================== AdamW

TEST(AdamWKernel, FusedEqualsScalarReferenceBitForBit) {
  const int64_t n = 1000;
  Vec p0 = random_vec(n, 1), g0 = random_vec(n, 2);
  std::vector<float> p1(p0.begin(), p0.end()), p2 = p1, m1(n, 0.f), m2(n, 0.f), v1(n, 0.f), v2(n, 0.f);
  std::vector<float> g(g0.begin(), g0.end());
  AdamWConfig cfg{1e-2, 0.9, 0.999, 1e-8, 0.1};
  for (int64_t step = 1; step <= 5; ++step) {
    const AdamWStep s = adamw_step_constants(cfg, step);
    adamw_update_fused(p1.data(), m1.data(), v1.data(), g.data(), n, s);
    adamw_update_reference(p2.data(), m2.data(), v2.data(), g.data(), n, s);
    for (float& x : g) x = -0.7f * x + 0.01f;  // a different gradient each step
  }
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(p1[i], p2[i]) << i;
    ASSERT_EQ(m1[i], m2[i]) << i;
    ASSERT_EQ(v1[i], v2[i]) << i;
  }
}

// Master weights: fused (blocks of 512, vector conversion) = reference (element by element) bit for bit, for
// float32 and bf16 gradients and lengths around the block and the 16-lane vector; the master follows the plain
// float32 AdamW on the (widened) gradient exactly, and the bf16 param is the master rounded to nearest even.
TEST(AdamWKernel, MasterWeightsFusedEqualsReferenceAndTheFloat32Update) {
  for (const bool bf16_grads : {false, true}) {
    for (const int64_t n : {1, 15, 511, 512, 513, 1000, 4099}) {
      Vec p0 = random_vec(n, 1), g0 = random_vec(n, 2);
      std::vector<float> master1(p0.begin(), p0.end()), master2 = master1, plain = master1;
      std::vector<float> m1(n, 0.f), m2(n, 0.f), m3(n, 0.f), v1(n, 0.f), v2(n, 0.f), v3(n, 0.f);
      std::vector<float> g32(g0.begin(), g0.end());
      std::vector<bf16> g16(n), param1(n, bf16{0}), param2(n, bf16{0});
      AdamWConfig cfg{1e-2, 0.9, 0.999, 1e-8, 0.1};
      for (int64_t step = 1; step <= 4; ++step) {
        const AdamWStep s = adamw_step_constants(cfg, step);
        convert_to_bf16(g16.data(), g32.data(), n);
        std::vector<float> g_seen(n);  // the gradient the update sees
        if (bf16_grads) {
          convert_to_float(g_seen.data(), g16.data(), n);
          adamw_update_master_fused(master1.data(), m1.data(), v1.data(), g16.data(), param1.data(), n, s);
          adamw_update_master_reference(master2.data(), m2.data(), v2.data(), g16.data(), param2.data(), n, s);
        } else {
          g_seen = g32;
          adamw_update_master_fused(master1.data(), m1.data(), v1.data(), g32.data(), param1.data(), n, s);
          adamw_update_master_reference(master2.data(), m2.data(), v2.data(), g32.data(), param2.data(), n, s);
        }
        adamw_update_reference(plain.data(), m3.data(), v3.data(), g_seen.data(), n, s);
        for (float& x : g32) x = -0.7f * x + 0.01f;
      }
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(master1[i], master2[i]) << "n " << n << " i " << i << " bf16 grads " << bf16_grads;
        ASSERT_EQ(master1[i], plain[i]) << "n " << n << " i " << i;
        ASSERT_EQ(m1[i], m2[i]);
        ASSERT_EQ(v1[i], v3[i]);
        ASSERT_EQ(param1[i].bits, param2[i].bits);
        ASSERT_EQ(param1[i].bits, to_bf16(master1[i]).bits);
      }
    }
  }
  const OpCount c16 = adamw_master_count(10, AdamWConfig{}, DType::bf16);
  const OpCount c32 = adamw_master_count(10, AdamWConfig{}, DType::f32);
  EXPECT_EQ(c16.other_flops, 140);
  EXPECT_EQ(c16.bytes_read + c16.bytes_written, 280);  // read g 2 + p, m, v 12; write p, m, v 12 + param 2
  EXPECT_EQ(c32.bytes_read + c32.bytes_written, 300);  // read g 4 + 12; write 12 + 2
}

// "Is it 16 or 18 bytes per parameter?" — measured by the tracking allocator: bf16 values and gradients with
// float32 master, m and v hold 2 + 2 + 12 B per parameter; float32 gradients make it 2 + 4 + 12. And the
// optimizer's master follows float32 AdamW exactly; the bf16 values are the master rounded.
class MasterWeightsBytes : public ::testing::TestWithParam<DType> {};

TEST_P(MasterWeightsBytes, MeasuredBytesPerParameterAndExactUpdate) {
  const DType grad_dtype = GetParam();
  const std::vector<int64_t> sizes = {1000, 70000, 64};  // a chunk boundary (65536) inside the second
  const MemoryStats before = tracker().stats();
  std::vector<Parameter> params;
  int64_t n_total = 0, value_bytes = 0, grad_bytes = 0, state_bytes = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int64_t n = sizes[t];
    const std::string name = "p" + std::to_string(t);
    Parameter p{name, Tensor::empty({n}, Category::parameter, name, DType::bf16),
                Tensor::empty({n}, Category::gradient, name + ".grad", grad_dtype)};
    const Vec init = random_vec(n, static_cast<uint32_t>(10 + t));
    for (int64_t i = 0; i < n; ++i) p.value.data_bf16()[i] = to_bf16(static_cast<float>(init[i]));
    params.push_back(p);
    n_total += n;
    value_bytes += aligned_size(2 * n);
    grad_bytes += aligned_size(dtype_bytes(grad_dtype) * n);
    state_bytes += 3 * aligned_size(4 * n);
  }
  // The float32 twin: widened values, plain AdamW on the same (widened) gradients.
  std::vector<std::vector<float>> plain, pm, pv;
  for (const Parameter& p : params) {
    std::vector<float> w(static_cast<size_t>(p.value.numel()));
    convert_to_float(w.data(), p.value.data_bf16(), p.value.numel());
    plain.push_back(w);
    pm.emplace_back(w.size(), 0.0f);
    pv.emplace_back(w.size(), 0.0f);
  }
  const AdamWConfig config{1e-2, 0.9, 0.999, 1e-8, 0.1};
  AdamWMasterWeights opt(params, config);
  counters().reset();
  for (int64_t step = 1; step <= 3; ++step) {
    for (size_t t = 0; t < params.size(); ++t) {
      const int64_t n = params[t].value.numel();
      const Vec g = random_vec(n, static_cast<uint32_t>(100 * step + t));
      std::vector<float> seen(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        if (grad_dtype == DType::bf16) {
          params[t].grad.data_bf16()[i] = to_bf16(static_cast<float>(g[i]));
          seen[i] = to_float(params[t].grad.data_bf16()[i]);
        } else {
          params[t].grad.data()[i] = seen[i] = static_cast<float>(g[i]);
        }
      }
      adamw_update_reference(plain[t].data(), pm[t].data(), pv[t].data(), seen.data(), n,
                             adamw_step_constants(config, step));
    }
    opt.step();
  }
  const MemoryStats after = tracker().stats();
  auto grew = [&](Category c) { return after[c].allocated_bytes.current - before[c].allocated_bytes.current; };
  EXPECT_EQ(grew(Category::parameter), value_bytes);
  EXPECT_EQ(grew(Category::gradient), grad_bytes);
  EXPECT_EQ(grew(Category::optimizer_state), state_bytes);
  const double per_param = static_cast<double>(value_bytes + grad_bytes + state_bytes) / n_total;
  EXPECT_NEAR(per_param, grad_dtype == DType::bf16 ? 16.0 : 18.0, 0.01) << "64-byte rounding only";
  // The estimator's layout table says the same, buffer by buffer (estimators/memory.h).
  const ParameterStateLayout layout =
      parameter_state_layout(Precision::bf16, grad_dtype == DType::bf16 ? GradDType::bf16 : GradDType::fp32);
  int64_t est_value = 0, est_grad = 0, est_state = 0;
  for (int64_t n : sizes) {
    est_value += aligned_size(layout.value_bytes * n);
    est_grad += aligned_size(layout.grad_bytes * n);
    est_state += 3 * aligned_size(layout.optimizer_bytes / 3 * n);
  }
  EXPECT_EQ(est_value, grew(Category::parameter));
  EXPECT_EQ(est_grad, grew(Category::gradient));
  EXPECT_EQ(est_state, grew(Category::optimizer_state));
  for (size_t t = 0; t < params.size(); ++t) {
    for (int64_t i = 0; i < params[t].value.numel(); ++i) {
      ASSERT_EQ(opt.master(t).data()[i], plain[t][i]) << t << " " << i;
      ASSERT_EQ(params[t].value.data_bf16()[i].bits, to_bf16(plain[t][i]).bits);
    }
  }
  const OpCount c = counters().get("adamw", Phase::optimizer);
  EXPECT_EQ(c.calls, 3);
  const OpCount one = adamw_master_count(n_total, config, grad_dtype);
  EXPECT_EQ(c.other_flops, 3 * one.other_flops);
  EXPECT_EQ(c.bytes_read + c.bytes_written, 3 * n_total * (grad_dtype == DType::bf16 ? 28 : 30));
  EXPECT_EQ(opt.master(0).name(), "p0.master");
  EXPECT_EQ(opt.master(0).category(), Category::optimizer_state);
}

INSTANTIATE_TEST_SUITE_P(GradDType, MasterWeightsBytes, ::testing::Values(DType::bf16, DType::f32),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return info.param == DType::bf16 ? std::string("bf16_grads") : std::string("fp32_grads");
                         });

TEST(MasterWeights, RejectsFloat32ValuesAndMixedGradients) {
  std::vector<Parameter> f32{
      {"w", Tensor::zeros({4}, Category::parameter, "w"), Tensor::zeros({4}, Category::gradient, "w.grad")}};
  expect_invalid([&] { AdamWMasterWeights opt(f32, AdamWConfig{}); },
                 {"parameter 'w' must be a contiguous bfloat16", "float32"});
  std::vector<Parameter> mixed{{"a", Tensor::zeros({4}, Category::parameter, "a", DType::bf16),
                                Tensor::zeros({4}, Category::gradient, "a.grad", DType::bf16)},
                               {"b", Tensor::zeros({4}, Category::parameter, "b", DType::bf16),
                                Tensor::zeros({4}, Category::gradient, "b.grad")}};
  expect_invalid([&] { AdamWMasterWeights opt(mixed, AdamWConfig{}); },
                 {"gradient of 'b'", "like every other gradient (bfloat16)"});
}

// PyTorch 1.13 torch.optim.AdamW (_single_tensor_adamw) in double, for `steps` steps with the optimizer's
// gradients taken from `grads(step)`.
void pytorch_adamw_double(Vec& p, const std::vector<Vec>& grads, const AdamWConfig& c) {
  Vec m(p.size(), 0.0), v(p.size(), 0.0);
  for (size_t s = 0; s < grads.size(); ++s) {
    const double step = static_cast<double>(s + 1);
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grads[s][i];
      p[i] *= 1.0 - c.lr * c.weight_decay;
      m[i] = m[i] * c.beta1 + g * (1.0 - c.beta1);
      v[i] = v[i] * c.beta2 + g * g * (1.0 - c.beta2);
      const double bc1 = 1.0 - std::pow(c.beta1, step), bc2 = 1.0 - std::pow(c.beta2, step);
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + c.eps;
      p[i] += -(c.lr / bc1) * (m[i] / denom);
    }
  }
}

class AdamWVsPyTorch : public ::testing::TestWithParam<double> {};  // weight decay

TEST_P(AdamWVsPyTorch, OptimizerMatchesPyTorchFormulaInDouble) {
  set_num_threads(2);
  const double wd = GetParam();
  ModelConfig c;  // any model: only its parameter list matters here
  c.vocab_size = 17;
  c.d_model = 8;
  c.num_heads = 2;
  c.d_ff = 16;
  c.num_layers = 1;
  Transformer model(c, 3);
  AdamWConfig cfg{3e-3, 0.9, 0.95, 1e-8, wd};
  AdamW opt(model.parameters(), cfg);
  std::vector<Vec> p0;
  std::vector<std::vector<Vec>> grads(model.parameters().size());
  for (const Parameter& p : model.parameters()) p0.push_back(vec_from(p.value));
  counters().reset();
  for (int step = 0; step < 6; ++step) {
    for (size_t i = 0; i < model.parameters().size(); ++i) {
      const Parameter& p = model.parameters()[i];
      const Vec g = random_vec(p.grad.numel(), static_cast<uint32_t>(100 * step + i), 0.5);
      for (int64_t j = 0; j < p.grad.numel(); ++j) p.grad.data()[j] = static_cast<float>(g[j]);
      grads[i].push_back(g);
    }
    opt.step();
  }
  for (size_t i = 0; i < model.parameters().size(); ++i) {
    Vec expected = p0[i];
    pytorch_adamw_double(expected, grads[i], cfg);
    const Vec got = vec_from(model.parameters()[i].value);
    for (size_t j = 0; j < got.size(); ++j) {
      // float32 state vs double: within 1e-6 absolute (updates are ~lr = 3e-3 per step).
      ASSERT_NEAR(got[j], expected[j], 1e-6) << model.parameters()[i].name << "[" << j << "]";
    }
  }
  const OpCount count = counters().get("adamw", Phase::optimizer);
  const int64_t n = model.num_parameters();
  EXPECT_EQ(count.calls, 6);
  EXPECT_EQ(count.other_flops, 6 * n * (wd != 0.0 ? 14 : 13));
  EXPECT_EQ(count.bytes_read, 6 * n * 16);
  EXPECT_EQ(count.bytes_written, 6 * n * 12);
}

INSTANTIATE_TEST_SUITE_P(WeightDecay, AdamWVsPyTorch, ::testing::Values(0.0, 0.1));

// ================================================================== config

TEST(Config, PresetsHaveTheDocumentedShapes) {
  const ModelConfig s = preset_config("S").model;
  EXPECT_EQ(s.vocab_size, 8192);
  EXPECT_EQ(s.context_length, 256);
  EXPECT_EQ(s.num_layers, 4);
  EXPECT_EQ(s.d_model, 512);
  EXPECT_EQ(s.batch_size, 8);
  const ModelConfig xl = preset_config("gpt2-xl").model;
  EXPECT_EQ(xl.vocab_size, 50257);
  EXPECT_EQ(xl.num_layers, 48);
  EXPECT_EQ(xl.d_model, 1600);
  EXPECT_EQ(xl.num_heads, 25);
  EXPECT_EQ(xl.d_ff, 6400);
  for (const std::string& name : preset_names()) EXPECT_NO_THROW(validate(preset_config(name))) << name;
  expect_invalid([] { preset_config("XXL"); }, {"preset", "'XXL'", "tiny, S, M, gpt2-small"});
}

TEST(Config, OverridesAndBadFieldsNameTheFieldAndRange) {
  TrainConfig c = preset_config("tiny");
  apply_override(c, "d_model=128");
  apply_override(c, "ffn=silu_mlp");
  apply_override(c, "tie_embeddings=true");
  apply_override(c, "lr=0.5");
  EXPECT_EQ(c.model.d_model, 128);
  EXPECT_EQ(c.model.ffn, FfnKind::silu_mlp);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.optim.lr, 0.5);

  struct Bad {
    const char* kv;
    std::vector<std::string> needles;
  };
  const std::vector<Bad> bad = {
      {"vocab_size=1", {"vocab_size: 1", "[2, 16777216]"}},
      {"context_length=0", {"context_length: 0", "[1, 131072]"}},
      {"num_layers=-3", {"num_layers: -3", "[1, 1024]"}},
      {"d_model=0", {"d_model: 0", "[1, 65536]"}},
      {"num_heads=5", {"num_heads: 5 does not divide d_model 64"}},
      {"num_heads=65", {"num_heads: 65", "[1, 64]"}},
      {"num_kv_heads=3", {"num_kv_heads: 3 is not allowed with num_heads 4", "divisor of num_heads"}},
      {"num_kv_heads=8", {"num_kv_heads: 8", "[1, 4]"}},
      {"num_kv_heads=-1", {"num_kv_heads: -1"}},
      {"head_dim=-2", {"head_dim: -2", "[0, 65536]"}},
      {"head_dim=65537", {"head_dim: 65537", "[0, 65536]"}},
      {"d_ff=0", {"d_ff: 0", "[1, 262144]"}},
      {"batch_size=0", {"batch_size: 0", "[1, 65536]"}},
      {"norm_eps=0", {"norm_eps: 0", "(0, 1]"}},
      {"norm_bias=true", {"norm_bias: true needs norm = layernorm", "norm rmsnorm has no bias"}},
      {"lr=-1", {"lr: -1", "[0, 10]"}},
      {"beta1=1", {"beta1: 1", "[0, 1)"}},
      {"beta2=1.5", {"beta2: 1.5", "[0, 1)"}},
      {"adam_eps=0", {"adam_eps: 0", "(0, 1]"}},
      {"weight_decay=2", {"weight_decay: 2", "[0, 1)"}},
  };
  for (const Bad& b : bad) {
    TrainConfig t = preset_config("tiny");
    apply_override(t, b.kv);
    expect_invalid([&] { validate(t); }, b.needles);
  }
  // The eps field's old name (checkpoints written before LayerNorm) still sets it.
  TrainConfig old = preset_config("tiny");
  apply_override(old, "rmsnorm_eps=1e-6");
  EXPECT_EQ(old.model.norm_eps, 1e-6);
  apply_override(old, "norm=layernorm");
  apply_override(old, "norm_bias=true");
  validate(old);
  EXPECT_NE(describe(old.model).find("layernorm (bias)"), std::string::npos) << describe(old.model);
  // A parallel block has one norm before both branches: norms after the sublayers are refused with it, naming both.
  TrainConfig par = preset_config("tiny");
  apply_override(par, "block=parallel");
  validate(par);
  EXPECT_NE(describe(par.model).find("parallel block"), std::string::npos);
  apply_override(par, "norm_placement=sandwich");
  expect_invalid([&] { validate(par); }, {"norm_placement: sandwich needs block = sequential",
                                          "allowed with block = "
                                          "parallel: pre"});
  expect_invalid([&] { apply_override(par, "norm_placement=after"); },
                 {"norm_placement: 'after'", "pre, post, sandwich"});
  expect_invalid([&] { apply_override(par, "block=serial"); }, {"block: 'serial'", "sequential, parallel"});
  // head_dim set: num_heads need not divide d_model (Gemma-2: D 2304, 8 heads of 256); KV still divides H.
  TrainConfig wide = preset_config("tiny");
  for (const char* kv : {"num_heads=3", "head_dim=40", "num_kv_heads=1"}) apply_override(wide, kv);
  validate(wide);
  EXPECT_EQ(wide.model.q_width(), 120);
  EXPECT_EQ(wide.model.kv_width(), 40);
  EXPECT_EQ(attention_heads_name(wide.model), "MQA");
  EXPECT_NE(describe(wide.model).find("H 3 (MQA), head_dim 40"), std::string::npos) << describe(wide.model);
  TrainConfig t = preset_config("tiny");
  EXPECT_EQ(attention_heads_name(t.model), "MHA");
  apply_override(t, "num_kv_heads=2");
  EXPECT_EQ(attention_heads_name(t.model), "GQA 2");
  // Overrides print the field as set (0 = the default, which follows num_heads); the JSON the value in effect.
  TrainConfig gqa = preset_config("tiny");
  const std::vector<std::string> lines = config_overrides(gqa);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "num_kv_heads=0"), lines.end());
  EXPECT_EQ(config_json(gqa)["num_kv_heads"], 4);
  EXPECT_EQ(config_json(gqa)["head_dim"], 16);
  expect_invalid([&] { apply_override(t, "ffn=gelu"); }, {"ffn: 'gelu'", "swiglu, silu_mlp"});
  expect_invalid([&] { apply_override(t, "position=sinusoidal"); },
                 {"position: 'sinusoidal'", "none, learned, rope, alibi"});
  expect_invalid([&] { apply_override(t, "d_model=abc"); },
                 {"d_model: 'abc' is not an integer; allowed: an integer in [1, 65536]"});
  expect_invalid([&] { apply_override(t, "lr=fast"); }, {"lr: 'fast' is not a number; allowed: a number in [0, 10]"});
  expect_invalid([&] { apply_override(t, "num_layers=99999999999999999999"); },
                 {"num_layers", "fits int64", "[1, 1024]"});
  expect_invalid([&] { apply_override(t, "d_modle=64"); }, {"unknown config key 'd_modle'; did you mean 'd_model'?"});
  expect_invalid([&] { apply_override(t, "tie_embeddings=maybe"); }, {"tie_embeddings", "true, false"});
  expect_invalid([&] { apply_override(t, "colour=blue"); }, {"unknown config key 'colour'"});
  expect_invalid([&] { apply_override(t, "seed=-1"); }, {"seed: -1"});
  expect_invalid([&] { apply_override(t, "d_model"); }, {"not of the form key=value"});
}

TEST(Config, TomlFileWithPresetSectionsAndErrors) {
  const std::string path = ::testing::TempDir() + "reckon_test_config.toml";
  {
    std::ofstream f(path);
    f << "preset = \"S\"\nnum_layers = 2\n[model]\nffn = \"silu_mlp\"\ntie_embeddings = true\n[optim]\nlr = 0.002\n";
  }
  const TrainConfig c = load_config_file(path);
  EXPECT_EQ(c.preset, "S");
  EXPECT_EQ(c.model.d_model, 512);
  EXPECT_EQ(c.model.num_layers, 2);
  EXPECT_EQ(c.model.ffn, FfnKind::silu_mlp);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.002);
  {
    std::ofstream f(path);
    f << "d_model = [1, 2]\n";
  }
  expect_invalid([&] { load_config_file(path); }, {path, "d_model: expected an integer in [1, 65536], got an array"});
  {
    std::ofstream f(path);
    f << "d_model = = 3\n";
  }
  expect_invalid([&] { load_config_file(path); }, {path, "line 1"});
  std::remove(path.c_str());
}

// Strict config files: nothing in a config file is silently ignored, and no file can crash the parser.
TEST(Config, TomlFileIsStrict) {
  const std::string path = ::testing::TempDir() + "reckon_strict.toml";
  auto load = [&](const std::string& text) {
    { std::ofstream(path, std::ios::binary) << text; }
    return load_config_file(path);
  };
  struct Bad {
    std::string text;
    std::vector<std::string> needles;
  };
  const std::vector<Bad> bad = {
      {"[modle]\nd_model = 0\n", {"unknown table 'modle'; did you mean 'model'?"}},
      {"[model]\nd_modle = 64\n", {"unknown key 'model.d_modle'; did you mean 'd_model'?"}},
      {"batch_size = 2\n[model]\nbatch_size = 4\n",
       {"'model.batch_size' is also given as 'batch_size'; give each key once"}},
      {"[optim]\nlr = 0.1\n[model]\nlr = 0.2\n", {"unknown key 'model.lr'"}},
      {"[model]\nlr = 0.1\n", {"unknown key 'model.lr'", "allowed here: vocab_size"}},
      {"[model.inner]\nd_model = 64\n", {"unknown table 'model.inner'"}},
      {"[optim]\n[optim.x]\n", {"unknown table 'optim.x'"}},
      {"model = 3\n", {"'model' must be a table"}},
      {"preset = 5\n", {"preset: expected a string, one of tiny, S, M"}},
      {"preset = \"XXL\"\n", {"preset: 'XXL' is not a preset"}},
      {"d_model = \"64\"\n", {"d_model: expected an integer in [1, 65536], got a string"}},
      {"tie_embeddings = 1\n", {"tie_embeddings: expected one of true, false, got an integer"}},
      {"ffn = true\n", {"ffn: expected one of swiglu, silu_mlp, geglu", "gelu_tanh_mlp", "got a boolean"}},
      {"lr = 1979-05-27\n", {"lr: expected a number in [0, 10], got a date or time"}},
      {"colour = \"blue\"\n", {"unknown key 'colour'"}},
      {"[" + std::string(100000, 'a') + std::string(1, ']') + "\n", {}},  // long but flat: parses, then unknown
      {"[" +
           [] {
             std::string h = "a";
             for (int i = 0; i < 100000; ++i) h += ".a";
             return h;
           }() +
           "]\n",
       {"line 1: dotted keys nest deeper than 8 levels"}},
      {[] {
         std::string k = "a";
         for (int i = 0; i < 100000; ++i) k += ".a";
         return k;
       }() +
           " = 1\n",
       {"line 1: dotted keys nest deeper than 8 levels"}},
      {"x = " + std::string(100000, '[') + "\n", {"line 1: arrays, inline tables or table headers nest deeper"}},
      {"x = {a = {b = {c = {d = {e = {f = {g = {h = {i = 1}}}}}}}}}\n", {"nest deeper than 8 levels"}},
  };
  for (const Bad& b : bad) {
    if (b.needles.empty()) {
      expect_invalid([&] { load(b.text); }, {"unknown table"});
      continue;
    }
    std::vector<std::string> needles = b.needles;
    needles.push_back(path);
    expect_invalid([&] { load(b.text); }, needles);
  }
  // Strings and comments may hold anything: only structure counts.
  const TrainConfig ok = load(
      "# [a.b.c.d.e.f.g.h.i.j] {{{{{{{{{{\npreset = \"tiny\" # x.y.z.w.v.u.t.s.r\n"
      "[model]\nffn = 'silu_mlp'\n");
  EXPECT_EQ(ok.model.ffn, FfnKind::silu_mlp);
  // Not a regular file, too large.
  expect_invalid([&] { load_config_file(::testing::TempDir()); }, {"is not a regular file (it is a folder)"});
  expect_invalid([&] { load_config_file("/dev/zero"); }, {"/dev/zero is not a regular file"});
  { std::ofstream(path) << std::string((1 << 20) + 1, '#'); }
  expect_invalid([&] { load_config_file(path); }, {"bytes, above the limit of 1048576 bytes"});
  std::remove(path.c_str());
}

}  // namespace
}  // namespace reckon
