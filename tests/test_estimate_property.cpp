// `reckon estimate` at any input: 5,000 seeded random configs (RECKON_PROPERTY_CASES=N for more) and option sets, drawn
// across and just beyond every documented range, run in-process (the same make_estimate_report the CLI prints). Each
// either answers with figures that hold together — and, where the config is small enough to run here, equal a real
// measured step to the byte and the FLOP — or fails with std::invalid_argument, which the CLI turns into one message
// and exit 2. Anything else (another exception, a crash, a sanitizer report in the ASan+UBSan build) fails.
//
// Reproduce one case: RECKON_PROPERTY_SEED=<seed> RECKON_PROPERTY_CASES=1 ./build/test_estimate_property
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/estimate.h"
#include "estimators/flops.h"
#include "tests/param_count_oracle.h"
#include "estimators/memory.h"
#include "model/config.h"
#include "optim/step.h"
#include "runtime/checked.h"

namespace reckon {
namespace {

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 10) : fallback;
}

// One generator per case, seeded from (base seed + case index): any failure is reproducible alone.
struct Draw {
  std::mt19937_64 rng;
  explicit Draw(uint64_t seed) : rng(seed) {}

  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
  int64_t uniform(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  // Log-uniform in [lo, hi] (lo ≥ 1): small and huge values alike.
  int64_t log_uniform(int64_t lo, int64_t hi) {
    const double x = std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi + 1.0))(rng));
    return std::clamp<int64_t>(static_cast<int64_t>(x), lo, hi);
  }
  // A value for an integer field whose allowed range is [lo, hi]: mostly inside (biased small, as most
  // configs are), sometimes exactly at or one past an edge, sometimes far outside.
  int64_t field(int64_t lo, int64_t hi, int64_t typical_hi) {
    const double r = std::uniform_real_distribution<double>(0, 1)(rng);
    if (r < 0.75) return log_uniform(std::max<int64_t>(lo, 1), std::min(hi, typical_hi));
    if (r < 0.92) return log_uniform(std::max<int64_t>(lo, 1), hi);
    if (r < 0.98) {
      const int64_t edges[] = {lo - 1, lo, hi, hi + 1};
      return edges[uniform(0, 3)];
    }
    const int64_t wild[] = {0,
                            -1,
                            std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::min(),
                            int64_t{1} << 31,
                            int64_t{1} << 40};
    return wild[uniform(0, 5)];
  }
  double real(double lo, double hi) {
    const double r = std::uniform_real_distribution<double>(0, 1)(rng);
    if (r < 0.95) return std::uniform_real_distribution<double>(lo, hi)(rng);
    const double odd[] = {0.0,
                          -0.0,
                          lo,
                          hi,
                          std::nextafter(hi, 2 * hi + 1),
                          -1.0,
                          1e-320,
                          std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(),
                          1e300};
    return odd[uniform(0, 9)];
  }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(uniform(0, static_cast<int64_t>(v.size()) - 1))];
  }
  // Mostly one of the allowed values, sometimes (5%) one that is not.
  std::string choose(const std::vector<std::string>& allowed, const std::vector<std::string>& refused) {
    return chance(0.05) ? pick(refused) : pick(allowed);
  }
};

EstimateOptions random_options(Draw& d) {
  EstimateOptions o;
  o.preset = d.choose(preset_names(), {"gpt4", "GPT2-XL", ""});
  const int64_t n_overrides = d.uniform(0, 4);
  for (int64_t i = 0; i < n_overrides; ++i) {
    switch (d.uniform(0, 17)) {
      case 0:
        o.overrides.push_back(fmt::format("vocab_size={}", d.field(2, 1 << 24, 65536)));
        break;
      case 1:
        o.overrides.push_back(fmt::format("context_length={}", d.field(1, 1 << 17, 2048)));
        break;
      case 2:
        o.overrides.push_back(fmt::format("num_layers={}", d.field(1, 1024, 8)));
        break;
      case 3:
        o.overrides.push_back(fmt::format("d_model={}", d.field(1, 1 << 16, 1024)));
        break;
      case 4:  // mostly powers of two, which divide most d_model values; sometimes anything
        o.overrides.push_back(
            fmt::format("num_heads={}", d.chance(0.8) ? int64_t{1} << d.uniform(0, 6) : d.field(1, 256, 32)));
        break;
      case 5:
        o.overrides.push_back(fmt::format("d_ff={}", d.field(1, 1 << 18, 4096)));
        break;
      case 6:
        o.overrides.push_back(fmt::format("batch_size={}", d.field(1, 1 << 16, 64)));
        break;
      case 7:
        o.overrides.push_back(d.choose(
            {"ffn=swiglu", "ffn=silu_mlp", "ffn=geglu", "ffn=geglu_tanh", "ffn=gelu_mlp", "ffn=gelu_tanh_mlp",
             "mlp_bias=true", "mlp_bias=false", "norm=layernorm", "norm=rmsnorm", "norm_bias=true", "block=parallel",
             "block=sequential", "norm_placement=post", "norm_placement=sandwich", "norm_placement=pre", "qk_norm=true",
             "norm_unit_offset=true", "scale_embeddings=true"},
            {"ffn=gelu", "ffn=", "mlp_bias=2", "norm=batchnorm", "block=serial", "norm_placement=after", "qk_norm=1"}));
        break;
      case 8:
        o.overrides.push_back(
            d.choose({"tie_embeddings=true", "tie_embeddings=false"}, {"tie_embeddings=2", "tie_embeddings=yes"}));
        break;
      case 9:
        o.overrides.push_back(d.choose({"position=none", "position=learned", "position=rope", "position=alibi"},
                                       {"position=sinusoidal", "position=None"}));
        if (d.chance(0.2)) {
          o.overrides.push_back(fmt::format("alibi_bias_max={}", d.chance(0.9) ? d.real(0.0, 64.0) : 65.0));
        }
        break;
      case 10:
        o.overrides.push_back(fmt::format("norm_eps={}", d.real(1e-12, 1.0)));
        break;
      case 11:
        o.overrides.push_back(fmt::format("weight_decay={}", d.real(0.0, 0.99)));
        break;
      case 12:
        if (d.chance(0.3))
          o.overrides.push_back(
              d.pick<std::string>({"d_model=abc", "num_layers=1e3", "=3", "nokey", "lr=", "seed=-1"}));
        break;
      case 13:  // key/value heads: mostly powers of two (divisors of most head counts), 0 = as many as num_heads
        o.overrides.push_back(
            d.choose({"num_kv_heads=0", "num_kv_heads=1", "num_kv_heads=2", "num_kv_heads=4", "num_kv_heads=8"},
                     {"num_kv_heads=-1", "num_kv_heads=3", "num_kv_heads=100000"}));
        break;
      case 14:  // head width apart from d_model / num_heads
        o.overrides.push_back(
            fmt::format("head_dim={}", d.chance(0.9) ? d.log_uniform(1, 512) : d.pick<int64_t>({-1, 70000, 0})));
        break;
      case 15:  // sliding windows, shorter or longer than the context, on every layer or alternating
        o.overrides.push_back(fmt::format("sliding_window={}", d.chance(0.9) ? d.field(0, 1 << 17, 512) : -1));
        if (d.chance(0.5))
          o.overrides.push_back(
              d.choose({"sliding_window_pattern=0", "sliding_window_pattern=2", "sliding_window_pattern=6"},
                       {"sliding_window_pattern=1", "sliding_window_pattern=2000"}));
        break;
      case 16:  // soft-capping of scores and logits, attention biases
        if (d.chance(0.3)) {
          o.overrides.push_back(d.choose({"attention_bias=none", "attention_bias=qkv", "attention_bias=qkvo"},
                                         {"attention_bias=true", "attention_bias=o"}));
          break;
        }
        o.overrides.push_back(fmt::format("{}={}", d.chance(0.5) ? "attn_logit_softcapping" : "final_logit_softcapping",
                                          d.chance(0.9) ? d.real(0.0, 100.0) : -1.0));
        break;
      default: {
        // A divisor pair that validates: heads dividing d_model.
        const int64_t heads = d.log_uniform(1, 64), head_dim = d.log_uniform(1, 256);
        o.overrides.push_back(fmt::format("num_heads={}", heads));
        o.overrides.push_back(fmt::format("d_model={}", heads * head_dim));
      }
    }
  }
  if (d.chance(0.3)) o.overrides.push_back(d.chance(0.9) ? "attention=flash" : "attention=tiled");
  if (d.chance(0.3))
    o.overrides.push_back(
        d.choose({"recompute=none", "recompute=attention", "recompute=full"}, {"recompute=selective"}));
  if (d.chance(0.3))
    o.overrides.push_back(
        d.choose({"zero_stage=0", "zero_stage=1", "zero_stage=2", "zero_stage=3"}, {"zero_stage=4", "zero_stage=-1"}));
  if (d.chance(0.2)) {  // the data-parallel section
    o.cluster.gpus_given = true;
    o.cluster.gpus = d.field(1, 65536, 64);
    o.cluster.link = d.choose({"auto", "nvlink", "infiniband"}, {"pcie", ""});
  }
  o.batch_size = d.chance(0.7) ? 0 : d.field(1, 1 << 16, 64);
  o.memory_budget = d.choose({"80GB", "80GiB", "40GB", "1", "1.5TB", "4611686018427387904"},
                             {"0", "4611686018427387905", "8 GB", "nanGB", "-1GB", "1e3GB", "80XB"});
  o.gpu = d.choose({"a100-80gb", "a100-40gb", "h100-sxm"}, {"v100", "A100"});
  o.precision = d.choose({"fp32", "tf32", "amp-bf16", "bf16"}, {"fp8", "FP32"});
  o.mfu = d.real(1e-6, 1.0);
  o.train_steps = d.field(1, int64_t{1} << 40, 1000000);
  o.train_batch = d.field(1, int64_t{1} << 24, 4096);
  o.activations = d.chance(0.8) ? "implemented" : d.choose({"textbook"}, {"both", ""});
  o.query_scratchpad = false;  // arithmetic only; the configs run for real below ask oneDNN
  return o;
}

// The resolved config of a set of options (the estimate applies the same steps).
TrainConfig resolve(const EstimateOptions& o) {
  TrainConfig c = preset_config(o.preset);
  for (const std::string& kv : o.overrides) apply_override(c, kv);
  if (o.precision == "tf32" || o.precision == "fp32") c.model.precision = Precision::fp32;
  if (o.precision == "amp-bf16") c.model.precision = Precision::amp_bf16;
  if (o.precision == "bf16") c.model.precision = Precision::bf16;
  if (o.batch_size != 0) c.model.batch_size = o.batch_size;
  return c;
}

// Small enough to run a real step here in a few milliseconds.
bool runnable(const ModelConfig& m) {
  return testing_ref::count_parameters(m) <= 2'000'000 && m.batch_size * m.context_length <= 4096 &&
         m.batch_size * m.num_heads * m.context_length * m.context_length <= 4'000'000 && m.num_layers <= 8 &&
         m.batch_size * m.context_length * m.q_width() <= 4'000'000;
}

TEST(EstimateProperty, EveryInputAnswersConsistentlyOrFailsWithAClearError) {
  const uint64_t base_seed = env_or("RECKON_PROPERTY_SEED", 20261126);
  const int64_t cases = static_cast<int64_t>(env_or("RECKON_PROPERTY_CASES", 5000));
  const int64_t max_reconciled = static_cast<int64_t>(env_or("RECKON_PROPERTY_RECONCILE", 24));
  int64_t answered = 0, refused = 0, reconciled = 0;
  std::map<std::string, int64_t> refusals;  // by what the message names first
  for (int64_t i = 0; i < cases; ++i) {
    const uint64_t seed = base_seed + static_cast<uint64_t>(i);
    Draw draw(seed);
    EstimateOptions o = random_options(draw);
    const std::string repro = fmt::format(
        "seed {} (RECKON_PROPERTY_SEED={} RECKON_PROPERTY_CASES=1): --preset {} --set {} --batch-size {} "
        "--memory-budget '{}' --activations {} --train-steps {} --train-batch {} --mfu {}",
        seed, seed, o.preset, fmt::join(o.overrides, " --set "), o.batch_size, o.memory_budget, o.activations,
        o.train_steps, o.train_batch, o.mfu);
    EstimateReport report;
    try {
      report = make_estimate_report(o);
    } catch (const std::invalid_argument& e) {
      ++refused;
      const std::string what = e.what();
      ++refusals[what.substr(0, std::min(what.find(':'), size_t{48}))];
      // One clear message: it names a flag or a field (a "--flag", "key:", "preset", or the config's fields).
      EXPECT_FALSE(std::string(e.what()).empty()) << repro;
      continue;
    } catch (const std::exception& e) {
      ADD_FAILURE() << repro << ": not an input error (would be reported, but not as a checked input): " << e.what();
      continue;
    }
    ++answered;
    const TrainConfig c = resolve(o);
    const ModelConfig& m = c.model;
    const nlohmann::json j = nlohmann::json::parse(report.json);
    ASSERT_EQ(j["num_parameters"].get<int64_t>(), testing_ref::count_parameters(m)) << repro;
    const nlohmann::json& mem = j["memory"];
    const int64_t peak = mem["peak_bytes"].get<int64_t>(), a = mem["per_sample_bytes"].get<int64_t>(),
                  b = mem["fixed_bytes"].get<int64_t>();
    EXPECT_GT(peak, 16 * testing_ref::count_parameters(m))
        << repro;  // weights, grads, m, v and at least one activation
    EXPECT_GT(a, 0) << repro;
    // Max batch: for the implemented accounting, the replay's own boundary; textbook is a·B + b.
    const int64_t budget = mem["budget_bytes"].get<int64_t>(), max_batch = mem["max_batch"].get<int64_t>();
    EXPECT_GE(max_batch, 0) << repro;
    if (o.activations == "textbook") {
      EXPECT_EQ(peak, (CheckedInt(a) * m.batch_size + b).value()) << repro;
      if (max_batch > 0) {
        EXPECT_LE(static_cast<__int128>(a) * max_batch + b, budget) << repro;
      }
      EXPECT_GT(static_cast<__int128>(a) * (max_batch + 1) + b, budget) << repro;
    } else {
      MemoryEstimateOptions pure;
      pure.onednn_scratchpad = false;
      pure.live_at_peak = false;
      auto replay_peak = [&](int64_t batch) -> __int128 {
        ModelConfig at = m;
        at.batch_size = batch;
        try {
          return estimate_step_memory(at, pure).peak_total;
        } catch (const SizeOverflow&) {
          return static_cast<__int128>(std::numeric_limits<int64_t>::max()) + 1;
        }
      };
      if (max_batch > 0) {
        EXPECT_LE(replay_peak(max_batch), budget) << repro;
      }
      EXPECT_GT(replay_peak(max_batch + 1), budget) << repro;
      // Off the a·B + b line only where the report says so.
      if (peak != static_cast<__int128>(a) * m.batch_size + b) {
        EXPECT_NE(report.text.find("off this line (the peak moves"), std::string::npos) << repro;
      }
    }
    const nlohmann::json& f = j["flops"];
    EXPECT_EQ(f["step"].get<int64_t>(), f["forward"].get<int64_t>() + f["backward"].get<int64_t>() +
                                            f["recompute"].get<int64_t>() + f["optimizer"].get<int64_t>())
        << repro;
    // Model FLOPs: the causal convention never exceeds the full one; recompute only adds executed FLOPs.
    // (FLOPs of a variant at a large batch may pass int64: those JSON numbers are doubles.)
    if (!f["model_causal"].is_null()) {
      EXPECT_LE(f["model_causal"].get<double>(), f["model_full"].get<double>()) << repro;
    }
    if (m.recompute != Recompute::none) {
      EXPECT_GT(f["recompute"].get<int64_t>(), 0) << repro;
    }
    // The matrix: 3 precisions × 2 attentions × 3 recomputes; at a fixed precision and attention, recompute never
    // executes fewer FLOPs and leaves the model FLOPs alone. (Its bytes need not fall: with one layer, `full`
    // keeps as much and re-allocates the block's output in backward.)
    ASSERT_EQ(j["matrix"].size(), 18u) << repro;
    for (size_t r = 0; r < 18; r += 3) {
      const nlohmann::json& none = j["matrix"][r];
      const nlohmann::json& full = j["matrix"][r + 2];
      if (full.contains("unavailable") || none.contains("unavailable")) continue;
      EXPECT_GE(full["hardware_flops"].get<double>(), none["hardware_flops"].get<double>()) << repro << " row " << r;
      EXPECT_EQ(full["model_flops_causal"].get<double>(), none["model_flops_causal"].get<double>()) << repro;
    }
    const nlohmann::json& t = j["training"];
    EXPECT_TRUE(std::isfinite(t["counted_days"].get<double>()) && t["counted_days"].get<double>() > 0) << repro;
    EXPECT_TRUE(std::isfinite(t["six_n_days"].get<double>()) && t["six_n_days"].get<double>() > 0) << repro;
    // Counted FLOPs include 6 per matmul weight per token (the 6·N rule without the gathered tables and gains).
    const double matmul_weights =
        static_cast<double>(testing_ref::count_parameters(m)) -
        (m.tie_embeddings ? 0.0 : static_cast<double>(m.vocab_size) * m.d_model) -
        (m.position == Position::learned ? static_cast<double>(m.context_length) * m.d_model : 0.0) -
        static_cast<double>(2 * m.num_layers + 1) * m.d_model;
    EXPECT_GE(t["counted_flops"].get<double>(), (1 - 1e-9) * 6 * matmul_weights * t["tokens"].get<double>()) << repro;

    // Small configs: the estimate equals a real step of the runtime, to the byte and the FLOP.
    if (o.activations == "implemented" && reconciled < max_reconciled && runnable(m)) {
      ++reconciled;
      o.query_scratchpad = true;
      const nlohmann::json js = nlohmann::json::parse(make_estimate_report(o).json);
      const StepMeasurement s = measure_steady_step(c);
      EXPECT_EQ(js["memory_scratchpad"]["peak_bytes_with_scratchpad"].get<int64_t>(),
                s.memory.total.allocated_bytes.peak)
          << repro << " " << describe(m);
      int64_t fwd = 0, bwd = 0, rec = 0, opt = 0;
      for (const auto& [key, count] : s.counts) {
        (key.phase == Phase::forward     ? fwd
         : key.phase == Phase::backward  ? bwd
         : key.phase == Phase::recompute ? rec
                                         : opt) += count.flops();
      }
      EXPECT_EQ(js["flops"]["recompute"].get<int64_t>(), rec) << repro << " " << describe(m);
      EXPECT_EQ(js["flops"]["hardware"].get<int64_t>(), fwd + bwd + rec) << repro << " " << describe(m);
      EXPECT_EQ(js["flops"]["forward"].get<int64_t>(), fwd) << repro << " " << describe(m);
      EXPECT_EQ(js["flops"]["backward"].get<int64_t>(), bwd) << repro << " " << describe(m);
      EXPECT_EQ(js["flops"]["optimizer"].get<int64_t>(), opt) << repro << " " << describe(m);
    }
    if (HasFailure()) break;  // the first failing seed is the one to reproduce
  }
  std::printf(
      "%lld cases from seed %llu: %lld answered, %lld refused with an input error, %lld reconciled against a "
      "real step\n",
      static_cast<long long>(cases), static_cast<unsigned long long>(base_seed), static_cast<long long>(answered),
      static_cast<long long>(refused), static_cast<long long>(reconciled));
  for (const auto& [what, count] : refusals)
    std::printf("  refused %6lld × %s\n", static_cast<long long>(count), what.c_str());
  if (cases >= 1000) {
    EXPECT_GT(answered, cases / 5);  // the generator must reach answers, not only errors
    EXPECT_GT(refused, cases / 10);  // and errors
    EXPECT_GE(reconciled, std::min<int64_t>(max_reconciled, 10));
  }
}

}  // namespace
}  // namespace reckon
