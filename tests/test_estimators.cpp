// estimators/: formulas tested against measurement (a real training step on the runtime), never against
// themselves; GPT-2-size numbers against independent arithmetic written here; no overflow at any preset.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "estimators/fit.h"
#include "estimators/flops.h"
#include "tests/param_count_oracle.h"
#include "tests/step_counts_oracle.h"
#include "estimators/memory.h"
#include "estimators/textbook.h"
#include "estimators/gpu_step.h"
#include "estimators/time.h"
#include "model/config.h"
#include "model/layout.h"
#include "model/transformer.h"
#include "optim/step.h"
#include "runtime/machine.h"
#include "runtime/checked.h"
#include "runtime/matmul.h"

namespace reckon {
namespace {

struct Case {
  const char* label;
  ModelConfig model;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

ModelConfig shape(int64_t v, int64_t t, int64_t l, int64_t d, int64_t h, int64_t f, int64_t b, FfnKind ffn, bool tied,
                  Position pos) {
  return ModelConfig{ModelShape{.vocab_size = v,
                                .context_length = t,
                                .num_layers = l,
                                .d_model = d,
                                .num_heads = h,
                                .d_ff = f,
                                .ffn = ffn,
                                .tie_embeddings = tied,
                                .position = pos},
                     RunSettings{.batch_size = b}};
}

class Reconcile : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { set_num_threads(2); }
};

TrainConfig variant(const ModelConfig& shape, Precision precision, GradDType grads, Recompute recompute) {
  TrainConfig config;
  config.model = shape;
  config.model.precision = precision;
  config.model.grad_dtype = grads;
  config.model.recompute = recompute;
  return config;
}

// The measured step of `config` against every estimator, to the byte and the FLOP.
void expect_step_reconciles(const TrainConfig& config) {
  SCOPED_TRACE(describe(config.model));
  matmul_cache_clear();
  const StepMeasurement m = measure_steady_step(config);
  const int64_t primitives_created = matmul_cache_size();  // one per distinct geometry the step ran
  const MemoryEstimate e = estimate_step_memory(config.model);

  // The step's matmul list (what extrapolate times shape by shape): the distinct geometries are exactly the
  // primitives the runtime created, and their FLOPs are the measured matmul FLOPs per op x phase.
  const std::vector<StepMatmul> matmuls = step_matmuls(config.model);
  std::vector<MatmulGeometry> distinct;
  std::map<OpKey, int64_t> listed_flops;
  for (const StepMatmul& mm : matmuls) {
    listed_flops[mm.key] += matmul_flops(mm.geometry) * mm.calls;
    bool seen = false;
    for (const MatmulGeometry& g : distinct) seen = seen || same_geometry(g, mm.geometry);
    if (!seen) distinct.push_back(mm.geometry);
  }
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), primitives_created);
  for (const auto& [key, count] : m.counts) {
    const auto it = listed_flops.find(key);
    // Flash attention's products run in reckon's own kernel (ops/flash_attention.h), not on oneDNN: its matmul
    // FLOPs are counted (causal rows only) but no oneDNN shape lists them.
    const bool own_kernel = config.model.attention == AttentionKind::flash && key.op == "attention";
    EXPECT_EQ(it == listed_flops.end() ? 0 : it->second, own_kernel ? 0 : count.matmul_flops)
        << key.op << " " << phase_name(key.phase);
  }

  for (Category c : all_categories()) {
    const int i = static_cast<int>(c);
    EXPECT_EQ(m.memory.peak_breakdown[i], e.peak_breakdown[i]) << category_name(c) << " at the peak";
    EXPECT_EQ(m.memory[c].allocated_bytes.peak, e.category_peak[i]) << category_name(c) << " own peak";
  }
  EXPECT_EQ(m.memory.total.allocated_bytes.peak, e.peak_total);
  EXPECT_EQ(m.scratchpad_at_peak, e.scratchpad_at_peak);
  ASSERT_EQ(m.live_at_peak.size(), e.live_at_peak.size());
  for (size_t i = 0; i < e.live_at_peak.size(); ++i) {
    EXPECT_EQ(m.live_at_peak[i].allocated_bytes, e.live_at_peak[i].bytes) << i;
  }
  // Event by event: every allocation and free of the step, in order, named alike on both sides.
  MemoryEstimateOptions with_events;
  with_events.step_events = true;
  const MemoryEstimate ev = estimate_step_memory(config.model, with_events);
  EXPECT_GT(m.events.size(), 0u);
  EXPECT_EQ(first_divergence(m.events, ev.step_events).text, "");

  const auto expected = estimate_step_counts(config.model, config.optim);
  ASSERT_EQ(m.counts.size(), expected.size());
  for (const auto& [key, exp] : expected) {
    const auto it = m.counts.find(key);
    ASSERT_NE(it, m.counts.end()) << key.op << " " << phase_name(key.phase);
    const OpCount& got = it->second;
    const std::string what = key.op + " " + phase_name(key.phase);
    EXPECT_EQ(got.calls, exp.calls) << what;
    EXPECT_EQ(got.matmul_flops, exp.matmul_flops) << what;
    EXPECT_EQ(got.other_flops, exp.other_flops) << what;
    EXPECT_EQ(got.bytes_read, exp.bytes_read) << what;
    EXPECT_EQ(got.bytes_written, exp.bytes_written) << what;
  }
}

// Every byte at the peak (per category, and oneDNN's scratchpad as its own term) and every FLOP, byte and
// call per op x phase of a measured steady-state step equals the analytic estimate exactly — in every
// precision (fp32, amp-bf16, bf16 with bf16 and with fp32 gradients), with both attentions and the three
// recomputes (none, attention, full).
TEST_P(Reconcile, MeasuredStepEqualsEstimateExactly) {
  for (const auto [precision, grads] : precision_settings())
    for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash})
      for (Recompute recompute : {Recompute::none, Recompute::attention, Recompute::full}) {
        if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
        TrainConfig config = variant(GetParam().model, precision, grads, recompute);
        config.model.attention = attention;
        config.optim.weight_decay = config.model.num_layers % 2 ? 0.0 : 0.01;
        expect_step_reconciles(config);
      }
}

// ZeRO stages 1 to 3 in one process (optim/zero.h: one rank owns everything, no collectives): the sharded
// tensors, the per-unit full parameters (3) and gradients (2, 3), created and freed where the schedule says, in
// every precision, with and without full recompute.
TEST_P(Reconcile, ZeroStagesInOneProcessEqualEstimateExactly) {
  for (int64_t stage : {1, 2, 3})
    for (const auto [precision, grads] : precision_settings())
      for (Recompute recompute : {Recompute::none, Recompute::full}) {
        if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
        TrainConfig config = variant(GetParam().model, precision, grads, recompute);
        config.model.zero_stage = stage;
        expect_step_reconciles(config);
      }
}

const FfnKind SW = FfnKind::swiglu, SM = FfnKind::silu_mlp;
const Position NO = Position::none, LE = Position::learned;
INSTANTIATE_TEST_SUITE_P(Configs, Reconcile,
                         ::testing::Values(Case{"tiny", preset_config("tiny").model},
                                           Case{"T1_B5_H1", shape(13, 1, 1, 8, 1, 8, 5, SW, false, NO)},
                                           Case{"T17_H2_L3_B1", shape(101, 17, 3, 24, 2, 40, 1, SM, false, LE)},
                                           Case{"D20_H5", shape(257, 9, 2, 20, 5, 36, 2, SW, true, LE)},
                                           Case{"D12_H3", shape(37, 7, 1, 12, 3, 20, 3, SM, true, NO)},
                                           Case{"V7_D6", shape(7, 5, 2, 6, 3, 6, 4, SW, false, LE)},
                                           Case{"T33_D48", shape(50, 33, 1, 48, 6, 96, 1, SM, false, NO)},
                                           Case{"T64_D96_H3", shape(300, 64, 2, 96, 3, 200, 2, SW, true, NO)},
                                           Case{"V1000_T31", shape(1000, 31, 1, 40, 8, 72, 3, SW, false, NO)},
                                           Case{"L4_silu_tied_learned", shape(64, 16, 4, 32, 4, 64, 2, SM, true, LE)},
                                           Case{"odd_F", shape(11, 3, 2, 10, 2, 7, 3, SW, false, NO)},
                                           Case{"B7_T2", shape(29, 2, 1, 16, 4, 48, 7, SM, false, LE)},
                                           Case{"T70_two_key_blocks", shape(40, 70, 1, 16, 2, 24, 2, SW, false, NO)}));

TEST(Reconcile, AWrongEstimateIsCaught) {
  // The same measurement against the estimate of a config one sample larger must differ: the comparison
  // can fail.
  set_num_threads(2);
  TrainConfig config = preset_config("tiny");
  const StepMeasurement m = measure_steady_step(config);
  ModelConfig other = config.model;
  other.batch_size += 1;
  EXPECT_NE(m.memory.total.allocated_bytes.peak, estimate_step_memory(other).peak_total);
  EXPECT_NE(m.counts.at(OpKey{"linear", Phase::forward}).matmul_flops,
            estimate_step_counts(other, config.optim).at(OpKey{"linear", Phase::forward}).matmul_flops);
}

// ---------------------------------------------------------------------------------- GPT-2 XL by hand

TEST(Gpt2Xl, ParameterCountByIndependentArithmetic) {
  // V 50257, T 1024, L 48, D 1600, d_ff 6400, W1/SiLU/W2, untied, no learned positions:
  // 2·V·D (embedding + head) + L·(4·D² + 2·D·6400 + 2·D) + D (final norm).
  const int64_t expected = 2LL * 50257 * 1600 + 48LL * (4LL * 1600 * 1600 + 2LL * 1600 * 6400 + 2 * 1600) + 1600;
  EXPECT_EQ(expected, 1635537600LL);
  EXPECT_EQ(testing_ref::count_parameters(preset_config("gpt2-xl").model), expected);
  EXPECT_EQ(parameter_layout(preset_config("gpt2-xl").model).total(), expected);
  ModelConfig tied = preset_config("gpt2-xl").model;
  tied.tie_embeddings = true;
  tied.position = Position::learned;
  EXPECT_EQ(testing_ref::count_parameters(tied), expected - 50257LL * 1600 + 1024LL * 1600);
  EXPECT_EQ(parameter_layout(tied).total(), expected - 50257LL * 1600 + 1024LL * 1600);
}

// The step's counts, composed call by call from the ops' declared counts over the replayed schedule, equal the
// closed-form algebra of the whole step (written separately, tests/step_counts_oracle.h) — for every shape,
// precision, attention, recompute, ZeRO stage and rank of 1 to 3 ranks, op by op and field by field.
TEST(StepCounts, ComposedFromTheOpsEqualTheClosedForms) {
  int compared = 0;
  // With shared K/V heads (groups of 2, multi-query), heads wider and narrower than D / H, and rotary positions.
  auto with = [](ModelConfig m, int64_t kv, int64_t head_dim, int64_t window = 0, int64_t pattern = 0, double cap = 0,
                 double logit_cap = 0) {
    m.num_kv_heads = kv, m.head_dim = head_dim;
    m.sliding_window = window, m.sliding_window_pattern = pattern, m.attn_logit_softcapping = cap;
    m.final_logit_softcapping = logit_cap;
    return m;
  };
  auto biased = [](ModelConfig m, AttentionBias bias) {
    m.attention_bias = bias;
    return m;
  };
  // The families' blocks: norm, its β, the ffn kind and its biases, the block and where its norms sit.
  auto family = [](ModelConfig m, NormKind norm, FfnKind ffn, bool biases, Block block, NormPlacement placement) {
    m.norm = norm, m.norm_bias = biases && norm == NormKind::layernorm, m.ffn = ffn, m.mlp_bias = biases;
    m.block = block, m.norm_placement = placement;
    m.norm_unit_offset = m.scale_embeddings = placement == NormPlacement::sandwich;  // Gemma-2's
    m.qk_norm = placement == NormPlacement::post;                                    // OLMo-2's
    return m;
  };
  for (const ModelConfig& base :
       {// GPT-2 (LayerNorm with β, every linear biased, tanh GELU), Falcon-7B (parallel, multi-query, exact GELU),
        // OLMo-2 (norms after the sublayers), Gemma-2 (before and after, gated tanh GELU, windows, caps)
        family(biased(shape(37, 7, 2, 12, 3, 20, 3, FfnKind::swiglu, true, Position::learned), AttentionBias::qkvo),
               NormKind::layernorm, FfnKind::gelu_tanh_mlp, true, Block::sequential, NormPlacement::pre),
        family(with(shape(23, 67, 2, 16, 2, 24, 1, FfnKind::swiglu, true, Position::rope), 1, 0), NormKind::layernorm,
               FfnKind::gelu_mlp, false, Block::parallel, NormPlacement::pre),
        family(with(shape(50, 33, 2, 48, 6, 96, 1, FfnKind::swiglu, false, Position::rope), 3, 0), NormKind::rmsnorm,
               FfnKind::swiglu, false, Block::sequential, NormPlacement::post),
        family(with(shape(31, 130, 2, 16, 2, 24, 1, FfnKind::swiglu, true, Position::rope), 1, 12, 70, 2, 0.8, 3.0),
               NormKind::rmsnorm, FfnKind::geglu_tanh, true, Block::sequential, NormPlacement::sandwich),
        shape(37, 7, 1, 12, 3, 20, 3, FfnKind::swiglu, false, Position::none),
        shape(19, 6, 2, 4, 4, 12, 2, FfnKind::silu_mlp, true, Position::learned),
        with(shape(23, 67, 1, 16, 2, 24, 1, FfnKind::swiglu, true, Position::rope), 1, 12),
        with(shape(50, 33, 2, 48, 6, 96, 1, FfnKind::silu_mlp, false, Position::rope), 3, 4),
        with(shape(64, 16, 2, 32, 4, 64, 2, FfnKind::swiglu, false, Position::none), 2, 0),
        // attention biases: Qwen2's on q, k, v; LLaMA's attention_bias on o too
        biased(with(shape(37, 7, 2, 12, 3, 20, 3, FfnKind::swiglu, true, Position::rope), 1, 4), AttentionBias::qkv),
        biased(shape(19, 6, 2, 4, 4, 12, 2, FfnKind::silu_mlp, false, Position::learned), AttentionBias::qkvo),
        // windows across a flash tile, on every layer and alternating; soft-capping
        with(shape(23, 67, 1, 16, 2, 24, 1, FfnKind::swiglu, true, Position::rope), 1, 12, 20),
        with(shape(31, 130, 3, 16, 2, 24, 1, FfnKind::silu_mlp, false, Position::rope), 1, 0, 70, 2, 0.8, 3.0)})
    for (const auto [precision, grads] : precision_settings())
      for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash})
        for (Recompute recompute : {Recompute::none, Recompute::attention, Recompute::full})
          for (int64_t stage : {0, 1, 2, 3})
            for (int ranks : {1, 2, 3}) {
              ModelConfig m = base;
              m.precision = precision, m.grad_dtype = grads, m.attention = attention, m.recompute = recompute;
              m.zero_stage = stage;
              m.bucket_cap_mb = 0.002;  // several buckets
              AdamWConfig optim;
              optim.weight_decay = compared % 2 == 0 ? 0.0 : 0.01;
              for (int rank = 0; rank < ranks; ++rank) {
                const auto composed = estimate_step_counts(m, optim, ranks, rank);
                const auto closed = testing_ref::closed_form_step_counts(m, optim, ranks, rank);
                ASSERT_EQ(composed.size(), closed.size()) << describe(m) << " rank " << rank << " of " << ranks;
                for (const auto& [key, want] : closed) {
                  const auto it = composed.find(key);
                  ASSERT_NE(it, composed.end()) << key.op << " " << phase_name(key.phase);
                  const OpCount& got = it->second;
                  const std::string what = fmt::format("{} {} | {} | rank {} of {}", key.op, phase_name(key.phase),
                                                       describe(m), rank, ranks);
                  EXPECT_EQ(got.calls, want.calls) << what;
                  EXPECT_EQ(got.matmul_flops, want.matmul_flops) << what;
                  EXPECT_EQ(got.other_flops, want.other_flops) << what;
                  EXPECT_EQ(got.bytes_read, want.bytes_read) << what;
                  EXPECT_EQ(got.bytes_written, want.bytes_written) << what;
                }
                ++compared;
              }
            }
  EXPECT_EQ(compared, 13 * static_cast<int>(precision_settings().size()) * 2 * 3 * 4 * 6);
}

// The one parameter layout (model/layout.h) against the closed form and the model's own tensors: same count for
// every shape, units tiling the parameters in order, each parameter in the unit of its layer.
TEST(ParameterLayout, MatchesTheClosedFormAndTheModel) {
  for (FfnKind ffn : {FfnKind::swiglu, FfnKind::silu_mlp})
    for (bool tied : {false, true})
      for (Position pos : {Position::none, Position::learned})
        for (int64_t layers : {1, 3}) {
          const ModelConfig m = shape(40, 9, layers, 12, 3, 20, 2, ffn, tied, pos);
          const ParameterLayout layout = parameter_layout(m);
          EXPECT_EQ(layout.total(), testing_ref::count_parameters(m));
          ASSERT_EQ(layout.units.size(), static_cast<size_t>(layers + 2));
          int next = 0;
          for (size_t u = 0; u < layout.units.size(); ++u) {
            EXPECT_EQ(layout.units[u].first, next);
            for (int i = layout.units[u].first; i < layout.units[u].second; ++i) {
              EXPECT_EQ(layout.params[static_cast<size_t>(i)].unit, static_cast<int>(u));
              EXPECT_EQ(layout.params[static_cast<size_t>(i)].layer,
                        u == 0 || u + 1 == layout.units.size() ? -1 : static_cast<int>(u) - 1);
            }
            next = layout.units[u].second;
          }
          EXPECT_EQ(next, static_cast<int>(layout.params.size()));
          EXPECT_EQ(layout.lm_head == layout.tok_emb, tied);
          EXPECT_EQ(layout.role_total(ParamRole::norm_gain), (2 * layers + 1) * 12);
          Transformer model(m, 1);
          ASSERT_EQ(model.parameters().size(), layout.params.size());
          for (size_t i = 0; i < layout.params.size(); ++i) {
            EXPECT_EQ(model.parameters()[i].name, layout.params[i].name());
            EXPECT_EQ(model.parameters()[i].shape, layout.params[i].shape());
          }
          EXPECT_EQ(model.units(), layout.units);
        }
}

TEST(Gpt2Xl, PeakMemoryByIndependentArithmetic) {
  // Pure arithmetic (no scratchpad), B = 1. Every XL tensor is a multiple of 64 bytes, so bytes = 4·elements.
  const int64_t V = 50257, T = 1024, L = 48, D = 1600, H = 25, F = 6400, B = 1;
  const int64_t N = 1635537600LL;
  MemoryEstimateOptions opts;
  opts.onednn_scratchpad = false;
  const MemoryEstimate e = estimate_step_memory(preset_config("gpt2-xl").model, opts);
  EXPECT_EQ(e.peak_breakdown[static_cast<int>(Category::parameter)], 4 * N);
  EXPECT_EQ(e.peak_breakdown[static_cast<int>(Category::gradient)], 4 * N);
  EXPECT_EQ(e.peak_breakdown[static_cast<int>(Category::optimizer_state)], 8 * N);
  // At the start of backward every saved tensor is alive: per layer the block input, attn-norm output and
  // rstd, q, k, v, probs (H·T²), ctx, the mid residual, ffn-norm output and rstd, W1 output and SiLU output;
  // then the final norm's input, output and rstd, the logits, and the int32 batch (tokens, targets).
  const int64_t per_layer = B * (8 * T * D + 2 * T + H * T * T + 2 * T * F);
  const int64_t activations = 4 * (L * per_layer + B * (2 * T * D + T + T * V) + 2 * B * T);
  EXPECT_EQ(e.peak_breakdown[static_cast<int>(Category::activation)], activations);
  // ... and the one temporary allocated there: the final norm's output gradient (B, T, D).
  EXPECT_EQ(e.peak_breakdown[static_cast<int>(Category::temporary)], 4 * B * T * D);
  EXPECT_EQ(e.peak_moment, "backward: final_norm.grad_out allocated");
  EXPECT_EQ(e.peak_total, 16 * N + activations + 4 * B * T * D);
}

TEST(Gpt2Xl, StepFlopsByIndependentArithmetic) {
  const int64_t V = 50257, T = 1024, L = 48, D = 1600, F = 6400, B = 1;
  const ModelConfig xl = preset_config("gpt2-xl").model;
  const StepFlops s = estimate_step_flops(xl, AdamWConfig{});
  // Forward matmuls: per layer q,k,v,o (4·2·BT·D²) + W1, W2 (2·2·BT·D·F) + QKᵀ and PV over the full T×T
  // (2·2·B·T²·D); plus the head 2·BT·D·V. Backward matmuls are exactly twice that.
  const int64_t fwd = L * (8 * B * T * D * D + 4 * B * T * D * F + 4 * B * T * T * D) + 2 * B * T * D * V;
  EXPECT_EQ(s.matmul_forward, fwd);
  EXPECT_EQ(s.matmul_backward, 2 * fwd);
  // AdamW: 14 FLOPs per parameter with weight decay (as executed).
  EXPECT_EQ(s.optimizer, 14 * 1635537600LL);
}

// MFU and HFU numerators for GPT-2 XL (B = 1) by independent arithmetic: the model FLOPs in the full T×T
// convention are the naive attention's counted forward + backward; the causal convention removes the 12·d_k
// products per (layer, head) for each of the T(T−1)/2 entries above the diagonal; executed FLOPs add, under
// recompute = full, every block's forward again (the step's forward minus the final norm, LM head and
// cross-entropy), under recompute = attention the attention cores' forward; flash executes neither convention.
TEST(Gpt2Xl, ModelAndHardwareFlopsByIndependentArithmetic) {
  ModelConfig xl = preset_config("gpt2-xl").model;
  xl.batch_size = 1;
  const int64_t t = 1024, d = 1600, h = 25, l = 48, v = 50257, dk = 64, n = t;
  const StepFlops naive = estimate_step_flops(xl, AdamWConfig{});
  const UtilizationFlops u = utilization_flops(xl, AdamWConfig{});
  EXPECT_EQ(u.model_full, naive.forward + naive.backward);
  EXPECT_EQ(u.hardware, u.model_full);
  EXPECT_EQ(u.model_full - u.model_causal, l * h * 12 * dk * (t * (t - 1) / 2));
  const int64_t outside_blocks = n * (4 * d + 4) + 2 * n * d * v + n * (5 * v + 4) + 1;  // final norm, head, loss
  for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash}) {
    ModelConfig c = xl;
    c.attention = attention;
    const StepFlops none = estimate_step_flops(c, AdamWConfig{});
    const UtilizationFlops u_none = utilization_flops(c, AdamWConfig{});
    EXPECT_EQ(u_none.model_causal, u.model_causal) << "model FLOPs do not depend on the implementation";
    EXPECT_EQ(u_none.model_full, u.model_full);
    c.recompute = Recompute::full;
    const UtilizationFlops u_full = utilization_flops(c, AdamWConfig{});
    EXPECT_EQ(u_full.model_causal, u.model_causal);
    EXPECT_EQ(u_full.hardware - u_none.hardware, none.forward - outside_blocks) << attention_name(attention);
    c.recompute = Recompute::attention;
    const int64_t core_forward = attention == AttentionKind::flash
                                     ? l * h * (4 * dk * (t * (t + 1) / 2))  // matmuls only; the elementwise part below
                                     : l * h * 4 * t * t * dk;
    const UtilizationFlops u_att = utilization_flops(c, AdamWConfig{});
    EXPECT_GT(u_att.hardware - u_none.hardware, core_forward) << attention_name(attention);
    EXPECT_LT(u_att.hardware - u_none.hardware, core_forward * 21 / 20) << "elementwise work is a few percent";
  }
}

TEST(Estimators, NoOverflowAtAnyPresetAndLargeBatch) {
  MemoryEstimateOptions opts;
  opts.onednn_scratchpad = false;
  for (const std::string& name : preset_names()) {
    ModelConfig one = preset_config(name).model;
    one.batch_size = 1;
    ModelConfig big = one;
    big.batch_size = 4096;  // or, where a step's FLOPs pass int64 there (llama3.1-405b: 8·10¹⁹), the largest
    while (!counts_fit(big, AdamWConfig{})) big.batch_size /= 2;  // power of two that fits
    ASSERT_GE(big.batch_size, 256) << name;
    const int64_t b = big.batch_size;
    // Matmul FLOPs are linear in the batch: an overflow anywhere would break the identity.
    const StepFlops f1 = estimate_step_flops(one, AdamWConfig{}), fb = estimate_step_flops(big, AdamWConfig{});
    EXPECT_EQ(fb.matmul_forward, b * f1.matmul_forward) << name;
    EXPECT_EQ(fb.matmul_backward, b * f1.matmul_backward) << name;
    const MemoryEstimate m1 = estimate_step_memory(one, opts), mb = estimate_step_memory(big, opts);
    EXPECT_GT(mb.peak_total, m1.peak_total) << name;
    const int64_t act1 = m1.peak_breakdown[static_cast<int>(Category::activation)];
    EXPECT_GT(act1, 0) << name;
    EXPECT_GE(mb.peak_breakdown[static_cast<int>(Category::activation)], (b - b / 40) * act1) << name;
  }
}

// The famous models: parameter counts against the published totals (sources in model/config.cpp).
TEST(Presets, ParameterCountsMatchThePublishedTotals) {
  // LLaMA 2 as released (Hugging Face model cards: sum of every tensor in the checkpoint).
  EXPECT_EQ(parameter_layout(preset_config("llama2-7b").model).total(), 6738415616LL);
  EXPECT_EQ(parameter_layout(preset_config("llama2-13b").model).total(), 13015864320LL);
  // 70B: grouped-query attention, 8 key/value heads of 128 (k and v are 1024 × 8192).
  const ModelConfig l70 = preset_config("llama2-70b").model;
  EXPECT_EQ(l70.kv_heads(), 8);
  EXPECT_EQ(parameter_layout(l70).total(), 68976648192LL);
  EXPECT_EQ(testing_ref::count_parameters(l70), 68976648192LL);
  // Today's families (published counts: checkpoint index total_size / 2 bytes of bf16, model cards).
  for (const auto& [name, count] : std::vector<std::pair<const char*, int64_t>>{{"llama3-8b", 8030261248LL},
                                                                                {"llama3-70b", 70553706496LL},
                                                                                {"llama3.1-405b", 405853388800LL},
                                                                                {"mistral-7b", 7241732096LL},
                                                                                {"smollm2-135m", 134515008LL},
                                                                                {"tinyllama-1.1b", 1100048384LL},
                                                                                {"falcon-7b", 6921720704LL},
                                                                                {"gemma2-2b", 2614341888LL},
                                                                                {"olmo2-7b", 7298617344LL},
                                                                                {"qwen2.5-0.5b", 494032768LL},
                                                                                {"qwen2.5-7b", 7615616512LL}}) {
    const ModelConfig m = preset_config(name).model;
    EXPECT_EQ(parameter_layout(m).total(), count) << name;
    EXPECT_EQ(testing_ref::count_parameters(m), count) << name;
    EXPECT_EQ(m.position, Position::rope) << name;
    TrainConfig full = preset_config(name);
    validate(full);
  }
  // GPT-2 as released (model cards): every count exact, and each preset's published figure is the one it carries.
  for (const auto& [name, count] : std::vector<std::pair<const char*, int64_t>>{{"openai-gpt2", 124439808LL},
                                                                                {"openai-gpt2-medium", 354823168LL},
                                                                                {"openai-gpt2-large", 774030080LL},
                                                                                {"openai-gpt2-xl", 1557611200LL}}) {
    const ModelConfig m = preset_config(name).model;
    EXPECT_EQ(parameter_layout(m).total(), count) << name;
    EXPECT_EQ(testing_ref::count_parameters(m), count) << name;
    EXPECT_EQ(preset_facts(name).published_parameters, count) << name;
    EXPECT_EQ(m.norm, NormKind::layernorm) << name;
    TrainConfig full = preset_config(name);
    validate(full);
  }
  for (const std::string& name : preset_names()) {
    const PresetFacts f = preset_facts(name);
    if (f.published_parameters > 0) {
      EXPECT_EQ(parameter_layout(preset_config(name).model).total(), f.published_parameters) << name;
    }
    if (!f.counterpart.empty()) {
      EXPECT_EQ(preset_facts(f.counterpart).counterpart, name);
    }
  }
  EXPECT_EQ(preset_facts("gpt2-xl").counterpart, "openai-gpt2-xl");
  EXPECT_EQ(preset_facts("gpt2-xl").published_parameters, 0);
  EXPECT_EQ(preset_facts("llama2-70b").published_parameters, 68976648192LL);
  EXPECT_EQ(preset_config("llama3-8b").model.rope_theta, 500000.0);
  EXPECT_EQ(preset_config("mistral-7b").model.sliding_window, 4096);
  // As multi-head attention it would be 2·L·D·(D − 1024) more: 78,371,889,152.
  ModelConfig mha = l70;
  mha.num_kv_heads = 0;
  EXPECT_EQ(parameter_layout(mha).total(), 78371889152LL);
  // GPT-3 (Table 2.1 gives 6.7B, 13.0B, 175.0B): reckon has no biases (0.01%) and 13B has d_model 5120 where
  // the paper lists 5140.
  auto rel = [](const char* name, double published) {
    return std::abs(static_cast<double>(parameter_layout(preset_config(name).model).total()) - published) / published;
  };
  EXPECT_LT(rel("gpt3-175b", 175.0e9), 0.003);
  EXPECT_LT(rel("gpt3-6.7b", 6.7e9), 0.007);
  EXPECT_LT(rel("gpt3-13b", 13.0e9), 0.012);
}

TEST(Fit, OverflowNamesTheFieldsAndTheLargestBatchThatFits) {
  ModelConfig c = preset_config("gpt2-xl").model;
  c.context_length = 131072;
  c.batch_size = 4096;
  EXPECT_FALSE(counts_fit(c, AdamWConfig{}));
  try {
    check_counts_fit(c, AdamWConfig{});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("batch_size 4096 × context_length 131072"), std::string::npos) << what;
    EXPECT_NE(what.find("largest value 9223372036854775807"), std::string::npos) << what;
    EXPECT_NE(what.find("the largest batch_size that fits at context_length 131072 is 537"), std::string::npos) << what;
  }
  // 537 is the boundary: it fits, 538 does not. The largest count of a step is its total FLOPs (attention's
  // B·H·T²·d_k products dominate at T = 131072); in 128-bit, per_sample·B + fixed crosses 2^63 − 1 there too.
  c.batch_size = 537;
  EXPECT_TRUE(counts_fit(c, AdamWConfig{}));
  c.batch_size = 538;
  EXPECT_FALSE(counts_fit(c, AdamWConfig{}));
  c.batch_size = 1;
  const LinearFlops lin = step_flops_linear_in_batch(c, AdamWConfig{});
  const auto step_flops = [&](__int128 b) { return lin.per_sample * b + lin.fixed; };
  EXPECT_LE(step_flops(537), std::numeric_limits<int64_t>::max());
  EXPECT_GT(step_flops(538), std::numeric_limits<int64_t>::max());
  check_counts_fit(preset_config("gpt3-175b").model, AdamWConfig{});  // the largest preset fits at its own batch
}

TEST(Estimators, StepFlopsAreExactlyLinearInBatch) {
  for (const char* name : {"tiny", "gpt2-xl", "llama2-70b"}) {
    ModelConfig c = preset_config(name).model;
    const LinearFlops lin = step_flops_linear_in_batch(c, AdamWConfig{});
    c.batch_size = 7;
    EXPECT_EQ(lin.per_sample * 7 + lin.fixed, estimate_step_flops(c, AdamWConfig{}).total()) << name;
    // What does not grow with the batch: AdamW, one add per weight element where dW accumulates (every linear
    // and the head: parameters less the embedding and the norm gains), and the loss's mean (2).
    // With RoPE, its cos/sin tables too: 3 per entry of T × d_k/2, 2 per inverse frequency.
    const int64_t weights =
        testing_ref::count_parameters(c) - c.vocab_size * c.d_model - (2 * c.num_layers + 1) * c.d_model;
    const int64_t tables =
        c.position == Position::rope ? 3 * c.context_length * (c.head_size() / 2) + c.head_size() : 0;
    EXPECT_EQ(lin.fixed, estimate_step_flops(c, AdamWConfig{}).optimizer + weights + 2 + tables) << name;
  }
}

TEST(Checked, OverflowThrowsInsteadOfWrapping) {
  const CheckedInt big = std::numeric_limits<int64_t>::max() / 2 + 1;
  EXPECT_THROW(big * 2, SizeOverflow);
  EXPECT_THROW(big + big, SizeOverflow);
  EXPECT_THROW(CheckedInt(std::numeric_limits<int64_t>::min()) - 1, SizeOverflow);
  EXPECT_THROW(CheckedInt(1) / 0, SizeOverflow);
  EXPECT_EQ((CheckedInt(3037000499) * 3037000499).value(), 9223372030926249001LL);  // ⌊√(2^63)⌋² fits
  try {
    (void)(CheckedInt(4294967296) * 4294967296);
  } catch (const SizeOverflow& e) {
    EXPECT_NE(
        std::string(e.what()).find("4294967296 × 4294967296 does not fit int64 (largest value 9223372036854775807)"),
        std::string::npos)
        << e.what();
  }
}

TEST(Estimators, MemoryIsLinearInBatch) {
  MemoryEstimateOptions opts;
  opts.onednn_scratchpad = false;
  const ModelConfig xl = preset_config("gpt2-xl").model;
  const LinearMemory lin = memory_linear_in_batch(xl, opts);
  EXPECT_TRUE(lin.exact);
  ModelConfig b7 = xl;
  b7.batch_size = 7;
  EXPECT_EQ(estimate_step_memory(b7, opts).peak_total, 7 * lin.per_sample + lin.fixed);
  EXPECT_EQ(lin.fixed, 16 * 1635537600LL);  // parameters, gradients, m and v: nothing else is batch-free
  EXPECT_EQ(lin.fixed, parameter_state_layouts()[0].total() * 1635537600LL);  // the fp32 layout's 4 + 4 + 8
}

}  // namespace
}  // namespace reckon

namespace reckon {
namespace {

TEST(Textbook, Gpt2XlActivationsByIndependentArithmetic) {
  // The problem statement's list per block: 2 RMSNorms (2BTD), QKV (3BTD), QᵀK and softmax (2BHT²),
  // weighted sum (BTD), output projection (BTD), W1 and SiLU (2·BT·4D), W2 (BTD) = 16BTD + 2BHT²;
  // then the final RMSNorm (BTD), the logits (BTV) and cross-entropy (BTV).
  const int64_t V = 50257, T = 1024, L = 48, D = 1600, H = 25, B = 3;
  ModelConfig xl = preset_config("gpt2-xl").model;
  xl.batch_size = B;
  EXPECT_EQ(textbook_activation_floats(xl), L * (16 * B * T * D + 2 * B * H * T * T) + B * T * D + 2 * B * T * V);
  // The implemented column sums to exactly the activations the memory estimator holds at the peak.
  int64_t implemented = 0;
  for (const ActivationRow& r : activation_comparison(xl)) implemented += r.implemented_floats;
  MemoryEstimateOptions pure;
  pure.onednn_scratchpad = false;
  EXPECT_EQ(4 * implemented, estimate_step_memory(xl, pure).peak_breakdown[static_cast<int>(Category::activation)]);
  // So it does for a parallel block and for norms after (OLMo-2) and around (Gemma-2) the sublayers, both norms.
  for (const auto& [block, placement] :
       {std::pair{Block::parallel, NormPlacement::pre}, std::pair{Block::sequential, NormPlacement::post},
        std::pair{Block::sequential, NormPlacement::sandwich}})
    for (NormKind norm : {NormKind::rmsnorm, NormKind::layernorm}) {
      ModelConfig m = xl;
      m.block = block, m.norm_placement = placement, m.norm = norm;
      m.qk_norm = norm == NormKind::rmsnorm;
      int64_t floats = 0;
      for (const ActivationRow& r : activation_comparison(m)) floats += r.implemented_floats;
      EXPECT_EQ(4 * floats, estimate_step_memory(m, pure).peak_breakdown[static_cast<int>(Category::activation)])
          << describe(m);
    }
}

TEST(TimeModel, Gpt2XlOnA100ByHand) {
  // 400k steps × 1024 sequences × 1024 tokens; 6·N·tokens / (19.5e12 · 0.5) / 86400 s.
  const double tokens = 400000.0 * 1024 * 1024;
  const double n = 1635537600.0;
  const TrainingTime t =
      training_time(0, 1635537600LL, 400000, 1024, 1024, gpu_peak_flops(gpu_spec("a100-80gb"), "fp32"), 0.5);
  EXPECT_DOUBLE_EQ(t.tokens, tokens);
  EXPECT_NEAR(t.six_n_days, 6 * n * tokens / (19.5e12 * 0.5) / 86400, 1e-9);
  EXPECT_NEAR(t.six_n_days, 4886.0, 0.5);
  EXPECT_THROW(gpu_spec("v100"), std::invalid_argument);
  EXPECT_THROW(gpu_peak_flops(gpu_spec("h100-sxm"), "fp8"), std::invalid_argument);
}

// The alpha-beta ring model by hand: 8 ranks, α = 2 µs, β = 300 GB/s.
TEST(TimeModel, AlphaBetaRingCollectivesByHand) {
  const Link link{"test", 2e-6, 300e9, ""};
  const double s = 1e9;
  const CollectiveTime ar = collective_time("all_reduce", s, 1, 8, link);
  EXPECT_DOUBLE_EQ(ar.wire_bytes, 2.0 * 7 / 8 * s);
  EXPECT_DOUBLE_EQ(ar.seconds, 14 * 2e-6 + 1.75e9 / 300e9);
  const CollectiveTime ag = collective_time("all_gather", s, 10, 8, link);  // 10 calls moving 1 GB in total
  EXPECT_DOUBLE_EQ(ag.wire_bytes, 7.0 / 8 * s);
  EXPECT_DOUBLE_EQ(ag.seconds, 10 * 7 * 2e-6 + 0.875e9 / 300e9);
  EXPECT_EQ(collective_time("reduce_scatter", s, 3, 1, link).seconds, 0.0);  // one rank: nothing moves
  // The counts of a step: all_gather's buffer is what it writes, reduce_scatter's what it reads.
  std::map<OpKey, OpCount> counts;
  counts[{"all_gather", Phase::communication}] = OpCount{2, 0, 0, 100, 800, 0};
  counts[{"reduce_scatter", Phase::communication}] = OpCount{2, 0, 0, 800, 100, 0};
  counts[{"linear", Phase::forward}] = OpCount{5, 1000, 0, 1, 1, 0};
  const CollectiveTime step = communication_time(counts, 8, link);
  EXPECT_DOUBLE_EQ(step.wire_bytes, 2 * 7.0 / 8 * 800);
  EXPECT_THROW(gpu_link(gpu_spec("a100-80gb"), 8, "pcie"), std::invalid_argument);
  EXPECT_EQ(gpu_link(gpu_spec("h100-sxm"), 8, "auto").bytes_per_second, 450e9);
  EXPECT_EQ(gpu_link(gpu_spec("h100-sxm"), 16, "auto").bytes_per_second, 50e9);
}

TEST(TimeModel, RooflineTakesTheSlowerOfComputeAndMemory) {
  std::map<OpKey, OpCount> counts;
  counts[OpKey{"mm", Phase::forward}] = OpCount{1, 1000, 0, 10, 10, 0};    // compute bound
  counts[OpKey{"ew", Phase::forward}] = OpCount{1, 0, 10, 4000, 4000, 0};  // memory bound
  const Roofline machine{"toy", 100.0, 10.0, 1000.0};
  const auto rows = roofline_step(counts, machine);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(rows[0].seconds, 8.0);  // "ew": 8000 B / 1000 B/s > 10 / 10
  EXPECT_TRUE(rows[0].memory_bound);
  EXPECT_DOUBLE_EQ(rows[1].seconds, 10.0);  // "mm": 1000 / 100
  EXPECT_FALSE(rows[1].memory_bound);
  EXPECT_DOUBLE_EQ(roofline_total(rows), 18.0);

  // Measured matmul seconds replace FLOPs / peak for the ops they list, and only for those.
  const std::map<OpKey, double> timed{{OpKey{"mm", Phase::forward}, 25.0}};
  const auto with_times = roofline_step(counts, machine, &timed);
  EXPECT_DOUBLE_EQ(with_times[0].seconds, 8.0);
  EXPECT_DOUBLE_EQ(with_times[1].seconds, 25.0);
}

// estimators/gpu_step: the GPU time model by independent arithmetic.
// One matmul: 4096³ bf16 on A100 (108 SMs, 312 TFLOP/s × η 0.869): 256×128 tiles make 16·32 = 512 CTAs in
// ⌈512/108⌉ = 5 waves of 2·256·128·4096 FLOPs at one SM's 312e12·0.869/108 FLOP/s.
TEST(GpuStep, OneMatmulsTileAndWaveQuantizationByHand) {
  const GpuSpec& a100 = gpu_spec("a100-80gb");
  const double per_sm = 312e12 * 0.869 / 108;
  const double bytes = 3.0 * 4096 * 4096 * 2;
  const GemmTime t = gemm_time(1, 4096, 4096, 4096, bytes, a100, 312e12);
  EXPECT_EQ(t.tile_m, 256);
  EXPECT_EQ(t.tile_n, 128);
  EXPECT_EQ(t.ctas, 512);
  EXPECT_EQ(t.waves, 5);
  EXPECT_FALSE(t.memory_bound);
  EXPECT_NEAR(t.seconds, 5 * 2.0 * 256 * 128 * 4096 / per_sm, 1e-12);
  // Wave quantization picks the tile: M = 128·108, N = 256 fills one wave of 108 256×128 CTAs exactly. Eight more
  // rows (M = 128·109) make 110 such CTAs (2 waves of 256·128), 109 of 128×256 (2 waves), 218 of 128×128 (3
  // waves of 128·128): the small tiles win, 3·128·128 / (256·128) = 1.5 times the full wave.
  const GemmTime full = gemm_time(1, 128 * 108, 256, 1024, 0, a100, 312e12);
  EXPECT_EQ(full.waves, 1);
  EXPECT_EQ(full.ctas, 108);
  const GemmTime one_more = gemm_time(1, 128 * 109, 256, 1024, 0, a100, 312e12);
  EXPECT_EQ(one_more.tile_m, 128);
  EXPECT_EQ(one_more.tile_n, 128);
  EXPECT_EQ(one_more.ctas, 218);
  EXPECT_EQ(one_more.waves, 3);
  EXPECT_NEAR(one_more.seconds / full.seconds, 1.5, 1e-12);
  // A thin matmul is memory-bound: its operand bytes at 2.039 TB/s × η 0.88.
  const GemmTime thin = gemm_time(1, 4096, 4096, 8, 1e9, a100, 312e12);
  EXPECT_TRUE(thin.memory_bound);
  EXPECT_NEAR(thin.seconds, 1e9 / (2.039e12 * 0.88), 1e-12);
}

// A memory-bound op: 200 MB on A100 80GB at 0.88 of 2.039 TB/s; 5 MB at Calculon's 0.6/0.9 of that; and
// arithmetic past the bandwidth at the FP32 peak.
TEST(GpuStep, MemoryBoundOpsByHand) {
  const GpuSpec& a100 = gpu_spec("a100-80gb");
  EXPECT_NEAR(memory_bound_seconds(200e6, 0, a100), 200e6 / (2.039e12 * 0.88), 1e-15);
  EXPECT_NEAR(memory_bound_seconds(5e6, 0, a100), 5e6 / (2.039e12 * 0.88 * 0.6 / 0.9), 1e-15);
  EXPECT_NEAR(memory_bound_seconds(1e3, 1e12, a100), 1e12 / 19.5e12, 1e-12);
  // 40 kernels of 5 MB each: the 1 MB band's efficiency, though 200 MB move in all.
  EXPECT_NEAR(memory_bound_seconds(200e6, 0, a100, 40), 200e6 / (2.039e12 * 0.88 * 0.6 / 0.9), 1e-15);
}

// FlashAttention-2's published A100 rates, read back and interpolated in log T and head dim; H100 scales them by the
// mean of its two published causal fwd+bwd ratios.
TEST(GpuStep, FlashAttentionRatesFromThePublishedTable) {
  const GpuSpec& a100 = gpu_spec("a100-80gb");
  EXPECT_DOUBLE_EQ(flash_attention_rate(a100, false, true, 128, 2048), 133e12);
  EXPECT_DOUBLE_EQ(flash_attention_rate(a100, true, true, 64, 16384), 166e12);
  EXPECT_NEAR(flash_attention_rate(a100, false, true, 128, 1448), 129.5e12, 0.05e12);  // √(1024·2048) ≈ 1448
  EXPECT_DOUBLE_EQ(flash_attention_rate(a100, true, false, 96, 4096), (169e12 + 193e12) / 2);
  EXPECT_DOUBLE_EQ(flash_attention_rate(a100, false, false, 128, 100000), 225e12);  // clamped at 16k
  const GpuSpec& h100 = gpu_spec("h100-sxm");
  EXPECT_NEAR(flash_attention_rate(h100, true, true, 128, 16384) / 186e12, (163.0 / 99 + 328.0 / 189) / 2, 1e-12);
}

// The overlap rule on two units: unit 1's collective (5) hides behind unit 0's compute (4) but for 1; unit 0's (3)
// has nothing before it.
TEST(GpuStep, OverlapRuleOnTwoUnits) {
  EXPECT_DOUBLE_EQ(exposed_communication({3, 5}, {4, 1}), 3 + 1);
  EXPECT_DOUBLE_EQ(exposed_communication({3, 2}, {4, 1}), 3);
  EXPECT_DOUBLE_EQ(exposed_communication({}, {}), 0);
}

// Over presets × GPUs × precisions: every op at or above its own roofline (FLOPs at the peak, bytes at the HBM
// peak), the step never below the roofline floor, and monotone in batch size and sequence length.
TEST(GpuStep, NeverBelowTheRooflineAndMonotone) {
  for (const char* preset : {"tiny", "S", "gpt2-small", "gpt2-xl", "llama3-8b"}) {
    for (const GpuSpec& gpu : gpu_specs()) {
      for (Precision p : {Precision::fp32, Precision::amp_bf16}) {
        TrainConfig c = preset_config(preset);
        c.model.precision = p;
        c.model.attention = AttentionKind::flash;
        c.model.batch_size = 1;
        c.model.context_length = std::min<int64_t>(c.model.context_length, 2048);
        SCOPED_TRACE(fmt::format("{} on {} in {}", preset, gpu.name, precision_name(p)));
        const Link link = gpu_link(gpu, 1, "auto");
        const GpuStep one = predict_gpu_step(c.model, c.optim, gpu, 1, link);
        EXPECT_GE(one.seconds, one.roofline_seconds);
        const double peak = gpu_peak_flops(gpu, gpu_math_for(p));
        const auto counts = estimate_step_counts(c.model, c.optim);
        for (const GpuOpTime& row : one.ops) {
          const OpCount& n = counts.at(row.key);
          const double floor = std::max(static_cast<double>(n.matmul_flops) / peak,
                                        static_cast<double>(n.bytes_read + n.bytes_written) / (gpu.hbm_tbps * 1e12));
          EXPECT_GE(row.seconds, floor * (1 - 1e-12)) << row.key.op << " " << phase_name(row.key.phase);
        }
        ModelConfig bigger = c.model;
        bigger.batch_size = 2;
        EXPECT_GE(predict_gpu_step(bigger, c.optim, gpu, 1, link).seconds, one.seconds);
        ModelConfig longer = c.model;
        longer.context_length *= 2;
        EXPECT_GE(predict_gpu_step(longer, c.optim, gpu, 1, link).seconds, one.seconds);
      }
    }
  }
}

// FSDP's mixed precision at ZeRO-3 (amp-bf16), by arithmetic on the layout, for GPT-2 XL as released (tied, learned
// positions, biases) and Llama-2 7B (untied) on 8 ranks. The gathers: a matmul weight or linear bias moves at 2 B an
// element, a norm's parameters, the position table and the token table at 4; the embeddings unit is gathered once
// (forward; tied: again for the head in forward and in backward), every layer and the head twice. The memory: no
// bf16 copy of the model lives through the step — the parameters at the peak are the float32 shards and at most two
// gathered units, where autocast's rule would hold a bf16 copy of every matmul weight (2 B each) besides.
TEST(FsdpMixedPrecision, GathersBf16OperandsAndKeepsNoStepLongCopy) {
  for (const char* preset : {"openai-gpt2-xl", "llama2-7b"}) {
    SCOPED_TRACE(preset);
    TrainConfig c = preset_config(preset);
    c.model.precision = Precision::amp_bf16;
    c.model.attention = AttentionKind::flash;
    c.model.batch_size = 1;
    c.model.context_length = 1024;
    c.model.zero_stage = 3;
    const ParameterLayout layout = parameter_layout(c.model);
    auto bf16_operand = [](const ParamSpec& p) {  // what a matmul reads: the linears' weights and biases, a head
      return p.role == ParamRole::attention || p.role == ParamRole::ffn || p.role == ParamRole::lm_head;
    };
    std::vector<double> unit_bytes(layout.units.size(), 0.0);
    std::vector<int64_t> unit_params(layout.units.size(), 0);
    double matmul_elements = 0, all = 0;
    for (const ParamSpec& p : layout.params) {
      unit_bytes[static_cast<size_t>(p.unit)] += static_cast<double>(p.numel()) * (bf16_operand(p) ? 2 : 4);
      ++unit_params[static_cast<size_t>(p.unit)];
      matmul_elements += bf16_operand(p) ? static_cast<double>(p.numel()) : 0.0;
      all += static_cast<double>(p.numel());
    }
    double gathered_bytes = 0;
    int64_t gathers = 0;
    for (size_t u = 0; u < layout.units.size(); ++u) {
      const int times = u == 0 ? (c.model.tie_embeddings ? 3 : 1) : 2;
      gathered_bytes += times * unit_bytes[u];
      gathers += times * unit_params[u];
    }
    const OpCount ag = estimate_step_counts(c.model, c.optim, 8, 0).at(OpKey{"all_gather", Phase::communication});
    EXPECT_EQ(ag.calls, gathers);
    EXPECT_EQ(static_cast<double>(ag.bytes_written), gathered_bytes);
    EXPECT_LT(matmul_elements, all);
    EXPECT_GT(matmul_elements, 0.9 * all);  // the copy it saves is ~2 B per parameter

    const MemoryEstimate m = estimate_step_memory(
        c.model, {.onednn_scratchpad = false, .live_at_peak = true, .data_parallel_ranks = 8, .data_parallel_rank = 0});
    const double shards = 4 * all / 8, largest_unit = *std::max_element(unit_bytes.begin(), unit_bytes.end());
    const double params_at_peak = static_cast<double>(m.peak_breakdown[static_cast<size_t>(Category::parameter)]);
    EXPECT_GE(params_at_peak, shards);
    EXPECT_LE(params_at_peak, shards + 2 * largest_unit + 64.0 * static_cast<double>(layout.params.size()));
    const double autocast_rule = shards + 2 * matmul_elements;  // + its copies, before any unit is gathered
    EXPECT_GT(autocast_rule - params_at_peak, 1.9 * all - 2 * largest_unit) << "the saving: ~2 B per parameter";
    for (const EstimatedTensor& t : m.live_at_peak) {
      if (t.category != Category::parameter || t.name.find(".shard") != std::string::npos) continue;
      const bool operand = t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, ".bf16") == 0;
      EXPECT_TRUE(operand || t.name.find("norm") != std::string::npos || t.name.find("emb") != std::string::npos)
          << t.name << ": a float32 matmul weight gathered";
    }
  }
}

// K micro-batches: K times each forward and backward op's time (the same kernels K times over), AdamW's and
// zero_grad's once, tokens K times; on 8 GPUs DDP's all-reduce once per step (after the last micro-batch), ZeRO-3's
// gathers and reduce-scatters per micro-batch, K times the traffic.
TEST(GpuStep, GradientAccumulationIsKMicroBatchesAndOneUpdate) {
  const GpuSpec& h100 = gpu_spec("h100-sxm");
  TrainConfig c = preset_config("gpt2-xl");
  c.model.precision = Precision::amp_bf16;
  c.model.attention = AttentionKind::flash;
  c.model.batch_size = 4;
  ModelConfig four = c.model;
  four.gradient_accumulation_steps = 4;
  const Link link1 = gpu_link(h100, 1, "auto");
  const GpuStep s1 = predict_gpu_step(c.model, c.optim, h100, 1, link1),
                s4 = predict_gpu_step(four, c.optim, h100, 1, link1);
  std::map<std::string, double> by_op;
  for (const GpuOpTime& row : s1.ops) by_op[row.key.op + "/" + phase_name(row.key.phase)] = row.seconds;
  double expected = 0;
  for (const GpuOpTime& row : s4.ops) {
    const double one = by_op.at(row.key.op + "/" + phase_name(row.key.phase));
    const bool per_micro = row.key.phase == Phase::forward || row.key.phase == Phase::backward;
    EXPECT_NEAR(row.seconds, (per_micro ? 4 : 1) * one, 1e-9 * row.seconds) << row.key.op;
    expected += (per_micro ? 4 : 1) * one;
  }
  EXPECT_NEAR(s4.compute_seconds, expected, 1e-9 * expected);
  EXPECT_NEAR(s4.tokens_per_second_per_gpu, 4 * 4 * 1024 / s4.seconds, 1e-6);
  EXPECT_GT(s4.tokens_per_second_per_gpu, s1.tokens_per_second_per_gpu);  // AdamW amortised over 4 micro-batches
  const Link link8 = gpu_link(h100, 8, "auto");
  for (int64_t stage : {0, 3}) {
    ModelConfig a = c.model, b = four;
    a.zero_stage = b.zero_stage = stage;
    const GpuStep g1 = predict_gpu_step(a, c.optim, h100, 8, link8), g4 = predict_gpu_step(b, c.optim, h100, 8, link8);
    EXPECT_NEAR(g4.communication_seconds, (stage == 0 ? 1 : 4) * g1.communication_seconds,
                1e-9 * g4.communication_seconds)
        << "stage " << stage;
    EXPECT_LE(g4.exposed_communication_seconds, (stage == 0 ? 1 : 4) * g1.exposed_communication_seconds * (1 + 1e-9));
  }
}

// Every preset on every GPU gets a prediction: finite, positive, its ops' times summing to the compute, MFU in
// (0, 1).
TEST(GpuStep, EveryPresetOnEveryGpu) {
  for (const std::string& preset : preset_names()) {
    TrainConfig c = preset_config(preset);
    c.model.precision = Precision::amp_bf16;
    c.model.attention = AttentionKind::flash;
    c.model.batch_size = 1;
    for (const GpuSpec& gpu : gpu_specs()) {
      SCOPED_TRACE(preset + " on " + gpu.name);
      const GpuStep s = predict_gpu_step(c.model, c.optim, gpu, 1, gpu_link(gpu, 1, "auto"));
      double sum = 0;
      for (const GpuOpTime& row : s.ops) sum += row.seconds;
      EXPECT_NEAR(sum, s.compute_seconds, 1e-9 * sum);
      EXPECT_TRUE(std::isfinite(s.seconds) && s.seconds > 0);
      EXPECT_GT(s.mfu_causal, 0);
      EXPECT_LT(s.hfu, 1);
    }
  }
}

}  // namespace
}  // namespace reckon
