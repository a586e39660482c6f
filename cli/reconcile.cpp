#include "cli/config_source.h"
#include "cli/reconcile.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/memory_guard.h"
#include "cli/output.h"
#include "cli/validate.h"
#include "runtime/check.h"
#include "runtime/comm.h"
#include "cli/table.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "estimators/time.h"
#include "model/config.h"
#include "model/layout.h"
#include "optim/step.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"
#include "runtime/machine.h"

namespace reckon {

namespace {

struct Result {
  std::string label;
  TrainConfig config;
  MemoryEstimate estimate;
  MemoryStats measured;
  int64_t measured_scratchpad_at_peak = 0;
  std::map<OpKey, OpCount> estimated_counts, measured_counts;
  int64_t measured_events = 0;
  EventDivergence events;   // the allocator's timeline vs the replay's, event by event
  int64_t differences = 0;  // number of non-zero differences
};

// Under mpirun (stage 0), `config` is one rank's (its batch) and both sides are that rank's step.
Result measure(const std::string& label, const TrainConfig& config) {
  Result r;
  r.label = label;
  r.config = config;
  const ModelConfig& m = config.model;
  const int ranks = comm_size();
  {
    const StepMeasurement s = measure_steady_step(config, ranks > 1);
    r.measured = s.memory;
    r.measured_scratchpad_at_peak = s.scratchpad_at_peak;
    r.measured_counts = s.counts;
    r.measured_events = static_cast<int64_t>(s.events.size());
    MemoryEstimateOptions options;
    options.data_parallel_ranks = ranks;
    options.data_parallel_rank = comm_rank();
    options.step_events = true;
    r.estimate = estimate_step_memory(m, options);
    // Equal peaks can hide errors that cancel: the two sequences of allocations and frees must be the same.
    r.events = first_divergence(s.events, r.estimate.step_events);
  }
  r.estimated_counts = estimate_step_counts(m, config.optim, ranks, comm_rank());

  for (Category c : all_categories()) {
    const int i = static_cast<int>(c);
    r.differences += r.measured.peak_breakdown[i] != r.estimate.peak_breakdown[i];
    r.differences += r.measured[c].allocated_bytes.peak != r.estimate.category_peak[i];
  }
  r.differences += r.measured.total.allocated_bytes.peak != r.estimate.peak_total;
  r.differences += r.measured_scratchpad_at_peak != r.estimate.scratchpad_at_peak;
  r.differences += r.events.index >= 0;
  std::map<OpKey, std::pair<OpCount, OpCount>> joined;
  for (const auto& [k, v] : r.measured_counts) joined[k].first = v;
  for (const auto& [k, v] : r.estimated_counts) joined[k].second = v;
  for (const auto& [k, mv] : joined) {
    const OpCount& a = mv.first;
    const OpCount& e = mv.second;
    r.differences += (a.calls != e.calls) + (a.matmul_flops != e.matmul_flops) + (a.other_flops != e.other_flops) +
                     (a.bytes_read != e.bytes_read) + (a.bytes_written != e.bytes_written);
  }
  return r;
}

std::string diff(int64_t measured, int64_t estimated) {
  return measured == estimated ? "0" : fmt::format("**{}**", fmt_int(measured - estimated));
}

void print_details(const Result& r) {
  Table mem;
  mem.header = {"at the peak", "measured (B)", "analytic (B)", "diff"};
  mem.right_align = {false, true, true, true};
  for (Category c : all_categories()) {
    const int i = static_cast<int>(c);
    mem.add({category_name(c), fmt_int(r.measured.peak_breakdown[i]), fmt_int(r.estimate.peak_breakdown[i]),
             diff(r.measured.peak_breakdown[i], r.estimate.peak_breakdown[i])});
  }
  mem.add({"  of which oneDNN scratchpad", fmt_int(r.measured_scratchpad_at_peak),
           fmt_int(r.estimate.scratchpad_at_peak), diff(r.measured_scratchpad_at_peak, r.estimate.scratchpad_at_peak)});
  mem.add({"**total peak**", fmt_int(r.measured.total.allocated_bytes.peak), fmt_int(r.estimate.peak_total),
           diff(r.measured.total.allocated_bytes.peak, r.estimate.peak_total)});
  for (Category c : all_categories()) {
    const int i = static_cast<int>(c);
    mem.add({fmt::format("{} (own peak)", category_name(c)), fmt_int(r.measured[c].allocated_bytes.peak),
             fmt_int(r.estimate.category_peak[i]),
             diff(r.measured[c].allocated_bytes.peak, r.estimate.category_peak[i])});
  }
  fmt::print("\n## Memory: measured (tracking allocator) vs analytic (estimators/memory)\n\n{}", mem.markdown());
  fmt::print("peak moment (analytic): {}\n", r.estimate.peak_moment);
  if (r.events.index < 0) {
    fmt::print("allocations and frees: the {} events of the step are the same, in the same order, on both sides\n",
               fmt_int(r.measured_events));
  } else {
    fmt::print("allocations and frees: **the sequences differ** at {}\n", r.events.text);
  }

  Table ops;
  ops.header = {"op",  "phase", "calls", "FLOPs measured", "FLOPs analytic", "diff", "bytes measured", "bytes analytic",
                "diff"};
  ops.right_align = {false, false, true, true, true, true, true, true, true};
  std::map<OpKey, std::pair<OpCount, OpCount>> joined;
  for (const auto& [k, v] : r.measured_counts) joined[k].first = v;
  for (const auto& [k, v] : r.estimated_counts) joined[k].second = v;
  for (const auto& [k, mv] : joined) {
    const OpCount &a = mv.first, &e = mv.second;
    const int64_t ab = a.bytes_read + a.bytes_written, eb = e.bytes_read + e.bytes_written;
    const bool calls_ok = a.calls == e.calls;
    const bool split_ok = a.matmul_flops == e.matmul_flops && a.bytes_read == e.bytes_read;
    ops.add({k.op, phase_name(k.phase), calls_ok ? fmt_int(a.calls) : fmt::format("**{} vs {}**", a.calls, e.calls),
             fmt_int(a.flops()), fmt_int(e.flops()), diff(a.flops(), e.flops()), fmt_int(ab), fmt_int(eb),
             split_ok || ab != eb ? diff(ab, eb) : "**split**"});
  }
  fmt::print("\n## FLOPs and bytes per op x phase, one step: measured (counters) vs analytic (estimators/flops)\n\n{}",
             ops.markdown());
  const int ranks = comm_size();
  if (ranks > 1) {  // the traffic in the ZeRO paper's unit, beside its rule
    const ModelConfig& m = r.config.model;
    const int64_t num_parameters = parameter_layout(m).total();
    const double psi = communication_psi(r.estimated_counts, ranks, dtype_bytes(m.dtypes().param), num_parameters);
    fmt::print(
        "communication this rank sends per step (ring algorithms, from the exact counts above): {:.4f} Ψ "
        "(Ψ = {} parameters; reductions in float32, gathers in {}); the ZeRO paper's rule for stage {}: {}Ψ, "
        "its large-N limit ({} ranks: {:.4f} Ψ by the rule's ring)\n",
        psi, fmt_int(num_parameters), dtype_name(m.dtypes().param), m.zero_stage, m.zero_stage == 3 ? 3 : 2, ranks,
        (m.zero_stage == 3 ? 3.0 : 2.0) * (ranks - 1) / ranks);
  }
}

// Each shape (with grouped K/V heads and head widths ≠ D / H among them) × 2 ffn kinds (all six across the shapes,
// one of each shape's two with mlp_bias; LayerNorm on every other shape, with and without its bias) × tied × position
// in every precision
// (fp32, amp-bf16, bf16 (bf16 grads), bf16 (fp32 grads)) with both attentions (naive, flash) and the three recomputes
// (none, attention, full). Positions none (ALiBi instead on every other shape: 1, 4, 6 and 2 heads, windowed on
// the T = 130 one), learned and rope (rope where the head width is even: all shapes but the d_k = 1 one; the untied
// ones with llama3 frequency scaling). Attention biases on q, k, v (Qwen2) and on o too in
// two shapes' configs. Parallel blocks on a third, the others' norms pre, post or sandwich in turn. Sliding windows and
// soft-capping (of scores and of logits) where a shape gives them: on its rope configs, or (the T = 130 shape) on all
// of them: 116 model configs × 4 × 2 × 3 = 2,784 configs. The mixed ones only where this CPU runs bf16 matmuls (they
// are left out, with a note, elsewhere).
std::vector<std::pair<std::string, TrainConfig>> sweep_configs() {
  struct Shape {
    int64_t v, t, l, d, h, f, b, kv = 0, head_dim = 0;  // kv, head_dim: 0 = the defaults (H, D / H)
    int64_t window = 0, pattern = 0;                    // sliding_window, sliding_window_pattern
    double cap = 0;                                     // attn_logit_softcapping
    bool every_position = false;                        // window and caps on every config, not only rope's
    double logit_cap = 0;                               // final_logit_softcapping
    AttentionBias bias = AttentionBias::none;           // attention_bias
  };
  // Odd sizes on purpose: T = 1, T = 67 (one full flash key block + 3 rows), prime V, D not a multiple of 16, H = 3 and
  // 5, B = 1 and 5, d_k = 1 (no attention scale: 1/√1 is not applied); shared K/V heads (groups of 2, 3 and 5, and
  // multi-query across a flash tile) and head_dim ≠ D / H (wider and narrower); windows inside a tile, across one
  // (T 67, W 20) and two (T 130, W 70), alternating with global layers (pattern 2), with and without soft-capping.
  const Shape shapes[] = {{37, 7, 1, 12, 3, 20, 3},
                          {64, 16, 2, 32, 4, 64, 2, 2, 0, 5, 2, 1.5, false, 30},
                          {101, 17, 3, 24, 2, 40, 1, 0, 16, 0, 0, 0, false, 0, AttentionBias::qkvo},
                          {13, 1, 1, 8, 1, 8, 5},
                          {257, 9, 2, 20, 5, 36, 2, 1, 0, 0, 0, 0, false, 0, AttentionBias::qkv},
                          {50, 33, 1, 48, 6, 96, 1, 2, 6, 7, 0, 0.5},
                          {7, 5, 2, 6, 3, 6, 4},
                          {19, 6, 2, 4, 4, 12, 2},
                          {23, 67, 1, 16, 2, 24, 1, 1, 12, 20},
                          {31, 130, 2, 16, 2, 24, 1, 1, 0, 70, 2, 0.8, true, 3}};
  std::vector<std::pair<std::string, TrainConfig>> out;
  // Two FFN kinds per shape, the six in turn (swiglu, silu_mlp; geglu, geglu_tanh; gelu_mlp, gelu_tanh_mlp; …), one
  // of the two with biases on its linears.
  for (size_t si = 0; si < std::size(shapes); ++si)
    for (size_t k = 0; k < 2; ++k)
      for (bool tied : {false, true})
        for (Position pos : {si % 2 == 1 ? Position::alibi : Position::none, Position::learned, Position::rope}) {
          const Shape& s = shapes[si];
          const FfnKind ffn = kFfnKinds[(2 * si + k) % std::size(kFfnKinds)].value;
          const bool mlp_bias = (si + k) % 2 == 1;
          // LayerNorm on every other shape, with its bias on one of the two kinds (with mlp_bias on some: GPT-2's).
          const bool layernorm = si % 2 == 0, norm_bias = layernorm && (si / 2 + k) % 2 == 0;
          // A parallel block (one norm feeding attention and the ffn) on a third of the model configs.
          const Block block = (si + k + (tied ? 1 : 0)) % 3 == 0 ? Block::parallel : Block::sequential;
          // The sequential ones' norms before, after (OLMo-2) or around (Gemma-2) each sublayer, in turn.
          const NormPlacement placement = block == Block::parallel
                                              ? NormPlacement::pre
                                              : kNormPlacements[(si + 2 * k + static_cast<size_t>(pos)) % 3].value;
          const bool gemma = placement == NormPlacement::sandwich && !layernorm;
          const bool qk_norm = !layernorm && (si + k) % 3 == 1;  // OLMo-2's q/k norms on some RMSNorm configs
          const int64_t head_width = s.head_dim > 0 ? s.head_dim : s.d / s.h;
          if (pos == Position::rope && head_width % 2 != 0) continue;  // RoPE turns pairs
          const bool scored = s.every_position || pos == Position::rope;
          for (const auto [precision, grads] : precision_settings())
            for (AttentionKind attention : {AttentionKind::naive, AttentionKind::flash})
              for (Recompute recompute : {Recompute::none, Recompute::attention, Recompute::full}) {
                if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty()) continue;
                TrainConfig c;
                c.preset = "sweep";
                c.model = ModelConfig{ModelShape{.vocab_size = s.v,
                                                 .context_length = s.t,
                                                 .num_layers = s.l,
                                                 .d_model = s.d,
                                                 .num_heads = s.h,
                                                 .num_kv_heads = s.kv,
                                                 .head_dim = s.head_dim,
                                                 .attention_bias = s.bias,
                                                 .d_ff = s.f,
                                                 .ffn = ffn,
                                                 .mlp_bias = mlp_bias,
                                                 .tie_embeddings = tied,
                                                 .position = pos,
                                                 .rope_theta = 100,  // a small base: short sequences turn far
                                                 // untied rope configs with Llama 3.1's frequency scaling (over a
                                                 // short original context, so every band has frequencies)
                                                 .rope_scaling = tied ? RopeScaling::none : RopeScaling::llama3,
                                                 .rope_factor = 8,
                                                 .rope_original_max_position = 16,
                                                 .sliding_window = scored ? s.window : 0,
                                                 .sliding_window_pattern = scored ? s.pattern : 0,
                                                 // (not with ALiBi: refused together)
                                                 .attn_logit_softcapping = scored && pos != Position::alibi ? s.cap : 0,
                                                 .final_logit_softcapping = scored ? s.logit_cap : 0,
                                                 .norm = layernorm ? NormKind::layernorm : NormKind::rmsnorm,
                                                 .norm_bias = norm_bias,
                                                 .block = block,
                                                 .norm_placement = placement,
                                                 // Gemma's (1 + w) RMSNorms and √D embeddings with its sandwich
                                                 .norm_unit_offset = gemma,
                                                 .scale_embeddings = gemma,
                                                 .qk_norm = qk_norm},
                                      RunSettings{.batch_size = s.b,
                                                  .precision = precision,
                                                  .grad_dtype = grads,
                                                  .attention = attention,
                                                  .recompute = recompute,
                                                  // 2 micro-batches a step on every 7th (7 is prime to the 24
                                                  // precision × attention × recompute settings: each gets its turn)
                                                  .gradient_accumulation_steps = out.size() % 7 == 3 ? 2 : 1}};
                c.optim.weight_decay = (out.size() / 8 % 3 == 0) ? 0.0 : 0.01;  // both AdamW FLOP variants
                out.emplace_back(describe(c.model), c);
              }
        }
  if (!bf16_matmul_unavailable_reason().empty()) {
    fmt::print("note: mixed-precision sweep configs left out: {}\n", bf16_matmul_unavailable_reason());
  }
  return out;
}

nlohmann::json result_json(const Result& r) {
  nlohmann::json j;
  j["config"] = r.label;
  j["differences"] = r.differences;
  for (Category c : all_categories()) {
    const int i = static_cast<int>(c);
    j["peak_breakdown"][category_name(c)] = {{"measured", r.measured.peak_breakdown[i]},
                                             {"analytic", r.estimate.peak_breakdown[i]}};
  }
  j["peak_total"] = {{"measured", r.measured.total.allocated_bytes.peak}, {"analytic", r.estimate.peak_total}};
  j["scratchpad_at_peak"] = {{"measured", r.measured_scratchpad_at_peak}, {"analytic", r.estimate.scratchpad_at_peak}};
  j["peak_moment"] = r.estimate.peak_moment;
  j["events"] = {{"measured", r.measured_events},
                 {"analytic", static_cast<int64_t>(r.estimate.step_events.size())},
                 {"first_divergence", r.events.index >= 0 ? nlohmann::json(r.events.text) : nlohmann::json(nullptr)}};
  nlohmann::json ops = nlohmann::json::array();
  std::map<OpKey, std::pair<OpCount, OpCount>> joined;
  for (const auto& [k, v] : r.measured_counts) joined[k].first = v;
  for (const auto& [k, v] : r.estimated_counts) joined[k].second = v;
  for (const auto& [k, mv] : joined) {
    auto one = [](const OpCount& x) {
      return nlohmann::json{{"calls", x.calls},
                            {"matmul_flops", x.matmul_flops},
                            {"other_flops", x.other_flops},
                            {"bytes_read", x.bytes_read},
                            {"bytes_written", x.bytes_written}};
    };
    ops.push_back(
        {{"op", k.op}, {"phase", phase_name(k.phase)}, {"measured", one(mv.first)}, {"analytic", one(mv.second)}});
  }
  j["ops"] = ops;
  return j;
}

}  // namespace

int run_reconcile(const ReconcileOptions& o) {
  std::vector<std::pair<std::string, TrainConfig>> configs;
  const int ranks = comm_size();
  check_arg(!(o.sweep && ranks > 1),
            "--sweep: runs in one process; under mpirun reconcile one config per run "
            "(--preset, --config, --set)");
  check_arg(!(o.sweep && o.zero_given), "--zero: --sweep reconciles its own configs in one process; drop --zero");
  if (o.sweep) {
    configs = sweep_configs();
  } else {
    TrainConfig c = starting_config(o.preset, o.config_file, o.hf_config);
    for (const std::string& kv : o.overrides) apply_override(c, kv);
    if (o.zero_given) apply_override(c, fmt::format("zero_stage={}", o.zero_stage));
    validate(c);
    check_same_config_on_all_ranks(c);
    if (ranks > 1) {  // the config's batch is the global one; each rank reconciles its own step
      check_arg(c.model.batch_size % ranks == 0, "batch_size: {} is not divisible by the {} mpirun ranks",
                c.model.batch_size, ranks);
      c.model.batch_size /= ranks;
    }
    configs.emplace_back(
        fmt::format("{} | {}{}", c.preset, describe(c.model),
                    ranks > 1 ? fmt::format(" | rank {} of {} (data parallel, zero stage {}; B is the rank's)",
                                            comm_rank(), ranks, c.model.zero_stage)
                              : std::string()),
        c);
  }
  for (const auto& [label, c] : configs) validate(c);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);
  check_distinct_paths({{"--config", o.config_file}, {"--hf-config", o.hf_config}, {"--json", o.json_path}});
  // Every measured step is checked against the budget before any of them runs.
  const int64_t budget = memory_budget(o.max_memory);
  for (const auto& [label, c] : configs) {
    check_step_fits("reconcile " + c.preset, c.model, c.optim, budget, ranks, comm_rank());
  }

  nlohmann::json all = nlohmann::json::array();
  int failed = 0;
  Progress progress("reconcile", static_cast<int64_t>(configs.size()));
  for (size_t i = 0; i < configs.size(); ++i) {
    const Result r = measure(configs[i].first, configs[i].second);
    if (o.sweep && o.quiet) progress.update(static_cast<int64_t>(i) + 1);
    if (r.differences != 0) progress.finish();
    failed += r.differences != 0;
    all.push_back(result_json(r));
    if (!o.sweep) {
      fmt::print("config: {}\n", r.label);
      print_details(r);
    } else if (!o.quiet || r.differences != 0) {
      fmt::print("{:>3}/{} {} | peak {} B, step {} FLOPs | {}\n", i + 1, configs.size(),
                 r.differences == 0 ? "exact" : "DIFFERS", fmt_int(r.estimate.peak_total),
                 fmt_int(estimate_step_flops(r.config.model, r.config.optim).total()), r.label);
      if (r.differences != 0) print_details(r);
    }
  }
  progress.finish();
  if (ranks > 1) {  // every rank's step: exit 0 only if all of them are exact
    const int everywhere = static_cast<int>(all_reduce_sum_scalar(failed));
    fmt::print("\nreconcile: {} of {} ranks exact to the byte and the FLOP (rank 0's tables above)\n",
               ranks - everywhere, ranks);
    failed = everywhere;
  }
  fmt::print("\nreconcile: {} of {} config(s) exact to the byte and the FLOP{}\n", configs.size() - failed,
             configs.size(), failed ? fmt::format(", {} differ", failed) : "");
  if (!o.json_path.empty()) {
    write_output_file("--json", o.json_path, json_text(all, 2));
    fmt::print("wrote {}\n", o.json_path);
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace reckon
