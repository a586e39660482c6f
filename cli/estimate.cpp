#include "cli/config_source.h"
#include "cli/estimate.h"

#include <cmath>
#include <map>
#include <optional>
#include <tuple>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/output.h"
#include "cli/table.h"
#include "cli/validate.h"
#include "runtime/check.h"
#include "estimators/fit.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "estimators/textbook.h"
#include "estimators/time.h"
#include "model/config.h"
#include "model/layout.h"
#include "optim/adamw.h"
#include "runtime/checked.h"
#include "runtime/machine.h"

namespace reckon {

namespace {
std::string gb(int64_t bytes) { return fmt::format("{:.2f} GB / {:.2f} GiB", bytes / 1e9, bytes / 1073741824.0); }
std::string sci(double x) { return fmt::format("{:.3e}", x); }

template <typename... Args>
void out(std::string& text, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(text), format, std::forward<Args>(args)...);
}
}  // namespace

namespace {

// Every input, checked before any figure is computed: a bad value is one message naming the flag or field and its
// allowed range, and nothing is printed or written.
EstimateResult checked_inputs(const EstimateOptions& o) {
  TrainConfig config = starting_config(o.preset, o.config_file, o.hf_config);
  for (const std::string& kv : o.overrides) apply_override(config, kv);
  // --precision sets the config's field (tf32: fp32 training, TF32 matmul peak); the GPU peak follows it.
  if (!o.precision.empty()) {
    apply_override(config, "precision=" + config_precision(o.precision));
  }
  const std::string gpu_math = o.precision == "tf32" ? "tf32" : gpu_math_for(config.model.precision);
  if (o.zero_given) apply_override(config, fmt::format("zero_stage={}", o.zero_stage));
  if (o.batch_size != 0) {  // 0: the config's
    check_range("--batch-size", o.batch_size, 1, kMaxEstimateBatch);
    config.model.batch_size = o.batch_size;
  }
  validate(config);
  if (o.activations != "implemented" && o.activations != "textbook") {
    throw std::invalid_argument(
        fmt::format("--activations: '{}' is not allowed; allowed values are implemented, textbook", o.activations));
  }
  for (const auto& [given, flag] :
       {std::pair{o.cluster.link_gbps_given, "--link-gbps"},
        std::pair{o.cluster.link_latency_given, "--link-latency-us"}, std::pair{o.cluster.link != "auto", "--link"}}) {
    check_arg(!given || o.cluster.gpus_given, "{}: describes the link between GPUs of --gpus N; give --gpus too", flag);
  }
  check_range("--mfu", o.mfu, kMinMfu, 1.0);
  check_range("--train-steps", o.train_steps, 1, kMaxTrainSteps);
  check_range("--train-batch", o.train_batch, 1, kMaxTrainBatch);
  check_token_count(o.train_steps, o.train_batch, config.model.context_length);
  const int64_t budget = parse_bytes("--memory-budget", o.memory_budget);
  const GpuSpec& gpu = gpu_spec(o.gpu);
  const double peak = gpu_peak_flops(gpu, gpu_math);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);
  check_distinct_paths({{"--config", o.config_file}, {"--hf-config", o.hf_config}, {"--json", o.json_path}});
  check_counts_fit(config.model, config.optim);

  EstimateResult r;
  r.config = config;
  r.gpu_math = gpu_math;
  r.gpu = gpu;
  r.peak_flops = peak;
  r.textbook = o.activations == "textbook";
  r.memory.budget = budget;
  return r;
}

// Counts summed from the parameter layout (model/layout.h); the formulas say what each row is.
void compute_parameters(EstimateResult& r) {
  const ModelConfig& m = r.config.model;
  const ParameterLayout params = parameter_layout(m);
  r.num_parameters = params.total();
  const int64_t ffn_mats = ffn_gated(m.ffn) ? 3 : 2;
  auto add = [&](std::string item, ParamRole role, std::string formula) {
    r.parameters.push_back({std::move(item), std::move(formula), params.role_total(role)});
  };
  add("token embedding", ParamRole::token_embedding, "V·D");
  if (m.position == Position::learned) add("position embedding", ParamRole::position_embedding, "T·D");
  // q, o: D × H·head_dim; k, v: D × KV·head_dim — 4·D² when KV = H and head_dim = D / H.
  const bool plain = m.q_width() == m.d_model && m.kv_width() == m.d_model;
  // Biases: q, k, v's widths (H + 2·KV)·head_dim (qkv), and o's D (qkvo).
  const std::string biases = m.attention_bias == AttentionBias::none ? ""
                             : m.attention_bias == AttentionBias::qkv
                                 ? " + L·(H + 2·KV)·head_dim (q, k, v biases)"
                                 : " + L·((H + 2·KV)·head_dim + D) (q, k, v, o biases)";
  add(fmt::format("attention ({}, all layers)", attention_heads_name(m)), ParamRole::attention,
      (plain && biases.empty() ? std::string("L·4·D²")
                               : fmt::format("L·2·D·(H + KV)·head_dim, H {}, KV {}, head_dim {}", m.num_heads,
                                             m.kv_heads(), m.head_size())) +
          biases);
  add(fmt::format("ffn ({}, all layers)", ffn_kind_name(m.ffn)), ParamRole::ffn,
      fmt::format("L·{}·D·d_ff{}", ffn_mats,
                  !m.mlp_bias     ? ""
                  : ffn_mats == 3 ? " + L·(2·d_ff + D) (biases)"
                                  : " + L·(d_ff + D) (biases)"));
  const std::string norms = m.parallel_block()                            ? "L·D + D (one norm a parallel block)"
                            : m.norm_placement == NormPlacement::sandwich ? "L·4·D + D (before and after each sublayer)"
                            : m.norm_placement == NormPlacement::post     ? "L·2·D + D (after each sublayer)"
                                                                          : "L·2·D + D";
  const std::string gains = norms + (m.qk_norm ? " + L·(H + KV)·head_dim (q/k norms)" : "");
  add(m.norm == NormKind::layernorm ? "LayerNorm gains"
      : m.norm_unit_offset          ? "RMSNorm gains (scale 1 + w)"
                                    : "RMSNorm gains",
      ParamRole::norm_gain, gains);
  if (m.norm_bias) add("LayerNorm biases", ParamRole::norm_bias, norms);
  add("LM head", ParamRole::lm_head, m.tie_embeddings ? "tied to the embedding" : "V·D (untied)");
  const PresetFacts facts = preset_facts(r.config.preset);
  r.published_parameters = facts.published_parameters;
  if (!facts.counterpart.empty()) {
    r.counterpart = facts.counterpart;
    const ParameterLayout theirs = parameter_layout(preset_config(facts.counterpart).model);
    for (const auto& [role, item] :
         {std::pair{ParamRole::token_embedding, "token embedding"},
          std::pair{ParamRole::position_embedding, "position embedding"},
          std::pair{ParamRole::attention, "attention (with its biases)"},
          std::pair{ParamRole::ffn, "ffn (with its biases)"}, std::pair{ParamRole::norm_gain, "norm gains"},
          std::pair{ParamRole::norm_bias, "norm biases (LayerNorm β)"},
          std::pair{ParamRole::lm_head, "LM head (0: tied)"}}) {
      r.counterpart_rows.push_back({item, params.role_total(role), theirs.role_total(role)});
    }
  }
}

// oneDNN's scratchpad is asked of oneDNN; a shape beyond oneDNN's own limits (a dimension above 2^31 − 1) is an
// answer too: reckon's runtime could not run this step on this CPU.
void compute_scratchpad(EstimateResult::Memory& mem, const ModelConfig& m) {
  try {
    const MemoryEstimate with_sp = estimate_step_memory(m);
    mem.scratchpad_queried = true;
    mem.scratchpad_at_peak = with_sp.scratchpad_at_peak;
    mem.scratchpad_max = with_sp.scratchpad_max;
    mem.peak_with_scratchpad = with_sp.peak_total;
  } catch (const std::invalid_argument& e) {
    mem.scratchpad_not_queried = m.dtypes().act == DType::bf16 && !bf16_matmul_unavailable_reason().empty()
                                     ? bf16_matmul_unavailable_reason()
                                     : std::string(e.what());
  }
}

void compute_memory(EstimateResult& r, const EstimateOptions& o) {
  const ModelConfig& m = r.config.model;
  EstimateResult::Memory& mem = r.memory;
  const int64_t n = r.num_parameters, b = m.batch_size;
  const MemoryEstimateOptions pure{.onednn_scratchpad = false};
  const MemoryEstimate impl = estimate_step_memory(m, pure);
  mem.fit = memory_linear_in_batch(m, pure);
  mem.replayed_peak = impl.peak_total;
  mem.peak_moment = impl.peak_moment;
  ModelConfig one_sample = m;
  one_sample.batch_size = 1;
  const int64_t textbook_per_sample = 4 * textbook_activation_floats(one_sample);
  const int64_t fixed = (CheckedInt(r.state.total()) * n).value();  // parameters, gradients, optimizer state
  auto cat = [&](Category c) { return impl.peak_breakdown[static_cast<int>(c)]; };
  if (r.textbook) {  // the parameter state by the layout, the activations by the textbook list
    mem.parameter = (CheckedInt(r.state.value_bytes) * n).value();
    mem.gradient = (CheckedInt(r.state.grad_bytes) * n).value();
    mem.optimizer_state = (CheckedInt(r.state.optimizer_bytes) * n).value();
    mem.activation = (CheckedInt(textbook_per_sample) * b).value();
    mem.total = (CheckedInt(fixed) + mem.activation).value();
    mem.per_sample = textbook_per_sample, mem.fixed = fixed;
  } else {  // the replay's bytes at the peak (amp-bf16's weight copies included, each tensor 64-byte rounded)
    mem.parameter = cat(Category::parameter), mem.gradient = cat(Category::gradient);
    mem.optimizer_state = cat(Category::optimizer_state), mem.activation = cat(Category::activation);
    mem.temporary = cat(Category::temporary), mem.total = impl.peak_total;
    mem.per_sample = mem.fit.per_sample, mem.fixed = mem.fit.fixed;
  }
  if (!r.textbook && o.query_scratchpad) compute_scratchpad(mem, m);
  // Max batch: textbook is a·B + b by construction; as implemented, the replay decides (each tensor is rounded
  // up to 64 B, so between the batch sizes checked the peak can sit a few bytes off the line).
  auto max_batch_for = [&](int64_t bytes) {
    if (!r.textbook) return max_batch_in_budget(m, bytes, pure, mem.fit);
    return mem.per_sample > 0 && bytes > mem.fixed ? (bytes - mem.fixed) / mem.per_sample : int64_t{0};
  };
  mem.max_batch = max_batch_for(mem.budget);
  if (o.memory_budget.find("GB") != std::string::npos && o.memory_budget.find("GiB") == std::string::npos) {
    // The same number read as GiB, since budgets are quoted both ways ("80 GB" cards hold 80 GiB).
    const std::string alt = o.memory_budget.substr(0, o.memory_budget.find("GB")) + "GiB";
    try {
      mem.gib_budget_bytes = parse_bytes("--memory-budget", alt);
      mem.gib_max_batch = max_batch_for(mem.gib_budget_bytes);
      mem.gib_budget = alt;
    } catch (const std::invalid_argument&) {
      // beyond the allowed range as GiB: the GB answer is the one asked for
    }
  }
}

// The config's variants in precision × attention × recompute, each from its own replays (as implemented) at this
// budget and training run; memoised, so the tables share them and the config's own row reuses its fit.
class Variants {
 public:
  struct Variant {
    LinearMemory lin;
    int64_t max_batch = 0;
    UtilizationFlopsLinear flops;  // exact fits; at(B) in double (a large B can pass int64 where the fit does not)
    std::string overflow;          // non-empty: a count of this variant does not fit int64 (the row says so)
  };
  Variants(const EstimateResult& r) : r_(r) {}
  ModelConfig config(Precision p, GradDType g, AttentionKind att, Recompute rc) const {
    ModelConfig vm = r_.config.model;
    vm.precision = p, vm.grad_dtype = g, vm.attention = att, vm.recompute = rc;
    return vm;
  }
  const Variant& get(Precision p, GradDType g, AttentionKind att, Recompute rc) {
    const auto key = std::make_tuple(p, g, att, rc);
    auto it = variants_.find(key);
    if (it != variants_.end()) return it->second;
    const ModelConfig& m = r_.config.model;
    const ModelConfig vm = config(p, g, att, rc);
    const bool same = p == m.precision && g == m.grad_dtype && att == m.attention && rc == m.recompute;
    const MemoryEstimateOptions pure{.onednn_scratchpad = false};
    Variant v;
    try {
      v.lin = same ? r_.memory.fit : memory_linear_in_batch(vm, pure, false);
      v.max_batch = max_batch_in_budget(vm, r_.memory.budget, pure, v.lin);
      v.flops = utilization_flops_linear_in_batch(vm, r_.config.optim);
    } catch (const SizeOverflow& e) {
      v.overflow = e.what();  // e.g. naive attention's B·H·T² beside a flash config that fits
    }
    return variants_.emplace(key, v).first->second;
  }

 private:
  const EstimateResult& r_;
  std::map<std::tuple<Precision, GradDType, AttentionKind, Recompute>, Variant> variants_;
};

// Days on the GPU for the training run at `peak` and utilization --mfu.
double days_at(const EstimateResult& r, const EstimateOptions& o, double step_flops, double peak) {
  return training_time(step_flops, r.num_parameters, o.train_steps, o.train_batch, r.config.model.context_length, peak,
                       o.mfu)
      .counted_days;
}
// Model FLOPs (causal) or executed FLOPs at the training batch, AdamW's added.
double model_step(const Variants::Variant& v, int64_t batch) {
  return v.flops.model_causal.at(batch) + v.flops.optimizer.at(batch);
}
double executed_step(const Variants::Variant& v, int64_t batch) {
  return v.flops.hardware.at(batch) + v.flops.optimizer.at(batch);
}
// FLOPs at batch size `batch` (a + b): exact integers where they fit int64, else the double of the exact fit.
nlohmann::json at_batch(const UtilizationFlopsLinear::Fit& a, const UtilizationFlopsLinear::Fit& extra, int64_t batch) {
  try {
    return nlohmann::json(
        (CheckedInt(a.per_sample) * batch + a.fixed + CheckedInt(extra.per_sample) * batch + extra.fixed).value());
  } catch (const SizeOverflow&) {
    return nlohmann::json(a.at(batch) + extra.at(batch));
  }
}

// "Is it 16 or 18 bytes per parameter?", "why does AMP use more memory?": every precision side by side.
void compute_precisions(EstimateResult& r, const EstimateOptions& o, Variants& variants) {
  const ModelConfig& m = r.config.model;
  for (const ParameterStateLayout& pl : parameter_state_layouts()) {
    const Variants::Variant& pv = variants.get(pl.precision, pl.grad_dtype, m.attention, m.recompute);
    EstimateResult::PrecisionRow row;
    row.layout = pl, row.gpu_math = gpu_math_for(pl.precision), row.unavailable = pv.overflow;
    const bool same = pl.precision == m.precision && pl.grad_dtype == m.grad_dtype;
    try {
      if (row.unavailable.empty()) {
        row.peak = same ? r.memory.replayed_peak
                        : estimate_step_memory(variants.config(pl.precision, pl.grad_dtype, m.attention, m.recompute),
                                               {.onednn_scratchpad = false})
                              .peak_total;
      }
    } catch (const SizeOverflow& e) {
      row.unavailable = e.what();
    }
    if (row.unavailable.empty()) {
      row.per_sample = pv.lin.per_sample, row.fixed = pv.lin.fixed, row.max_batch = pv.max_batch;
      row.days = days_at(r, o, executed_step(pv, o.train_batch), gpu_peak_flops(r.gpu, row.gpu_math));
    }
    r.precisions.push_back(row);
  }
}

// Precision × attention × recompute: what each choice keeps per sample, the batch it allows, the FLOPs it executes
// against the model's own, and the days at MFU and at HFU = --mfu.
void compute_matrix(EstimateResult& r, const EstimateOptions& o, Variants& variants) {
  const ModelConfig& m = r.config.model;
  const int64_t b = m.batch_size * m.micro_batches();  // the step's sequences (the fits are per sequence)
  for (Precision p : {Precision::fp32, Precision::amp_bf16, Precision::bf16}) {
    const double gpu_peak =
        gpu_peak_flops(r.gpu, o.precision == "tf32" && p == Precision::fp32 ? "tf32" : gpu_math_for(p));
    const GradDType g = p == m.precision ? m.grad_dtype : GradDType::automatic;
    for (AttentionKind att : {AttentionKind::naive, AttentionKind::flash})
      for (Recompute rc : {Recompute::none, Recompute::attention, Recompute::full}) {
        const Variants::Variant& vr = variants.get(p, g, att, rc);
        EstimateResult::VariantRow row;
        row.precision = p, row.grad_dtype = g, row.attention = att, row.recompute = rc;
        row.is_config = p == m.precision && att == m.attention && rc == m.recompute;
        row.unavailable = vr.overflow;
        if (row.unavailable.empty()) {
          row.per_sample = vr.lin.per_sample, row.fixed = vr.lin.fixed, row.max_batch = vr.max_batch;
          row.days_at_mfu = days_at(r, o, model_step(vr, o.train_batch), gpu_peak);
          row.days_at_hfu = days_at(r, o, executed_step(vr, o.train_batch), gpu_peak);
          row.executed_over_model = vr.flops.hardware.at(b) / vr.flops.model_causal.at(b);
          row.step_flops = at_batch(vr.flops.hardware, vr.flops.optimizer, b);
          row.model_causal = at_batch(vr.flops.model_causal, {}, b);
          row.model_full = at_batch(vr.flops.model_full, {}, b);
          row.hardware = at_batch(vr.flops.hardware, {}, b);
        }
        r.matrix.push_back(row);
      }
  }
}

void compute_flops_and_training(EstimateResult& r, const EstimateOptions& o, Variants& variants) {
  const ModelConfig& m = r.config.model;
  const int64_t b = m.batch_size * m.micro_batches(), n = r.num_parameters, t = m.context_length;  // b: the step's rows
  EstimateResult::Flops& f = r.flops;
  f.step = estimate_step_flops(m, r.config.optim);
  f.tokens = b * t;
  const Variants::Variant& own = variants.get(m.precision, m.grad_dtype, m.attention, m.recompute);
  f.unavailable = own.overflow;
  if (own.overflow.empty()) {  // from the exact fits (the naive reference of a flash config can pass int64 here)
    f.model_causal = own.flops.model_causal.at(b), f.model_full = own.flops.model_full.at(b);
    f.hardware = own.flops.hardware.at(b);
    f.model_causal_exact = at_batch(own.flops.model_causal, {}, b);
    f.model_full_exact = at_batch(own.flops.model_full, {}, b);
  }
  f.adamw_per_parameter = r.state.optimizer_bytes == 12 ? adamw_master_count(1, r.config.optim, m.dtypes().grad)
                                                        : adamw_count(1, r.config.optim);
  // A training batch of millions of sequences has a step count beyond int64: step FLOPs are exactly linear in
  // the batch size, so the step at the training batch is per_sample·B + fixed in double.
  EstimateResult::Training& tr = r.training;
  tr.train_step_flops = step_flops_linear_in_batch(m, r.config.optim).at(o.train_batch);
  tr.executed = training_time(tr.train_step_flops, n, o.train_steps, o.train_batch, t, r.peak_flops, o.mfu);
  if (own.overflow.empty()) {
    tr.has_model = true;
    tr.model_causal =
        training_time(model_step(own, o.train_batch), n, o.train_steps, o.train_batch, t, r.peak_flops, o.mfu);
    tr.model_full = training_time(own.flops.model_full.at(o.train_batch) + own.flops.optimizer.at(o.train_batch), n,
                                  o.train_steps, o.train_batch, t, r.peak_flops, o.mfu);
    tr.hfu_needed = o.mfu * tr.executed.counted_flops / tr.model_causal.counted_flops;
  }
}

}  // namespace

EstimateResult compute_estimate(const EstimateOptions& o) {
  EstimateResult r = checked_inputs(o);
  const ModelConfig& m = r.config.model;
  r.state = parameter_state_layout(m.precision, m.grad_dtype);
  compute_parameters(r);
  compute_memory(r, o);
  Variants variants(r);
  compute_precisions(r, o, variants);
  compute_matrix(r, o, variants);
  r.activations = activation_comparison(m);
  compute_flops_and_training(r, o, variants);
  if (o.cluster.gpus_given) {
    r.cluster = cluster_report(r.config, r.gpu, r.peak_flops, o.mfu, r.memory.budget, o.memory_budget, o.train_steps,
                               o.train_batch, o.cluster);
  }
  // The step predicted op by op, for this config's batch per GPU on --gpus GPUs (1 without).
  r.gpu_ranks = o.cluster.gpus_given ? o.cluster.gpus : 1;
  ClusterOptions at = o.cluster;  // the link --gpus describes, with --link-gbps / --link-latency-us applied
  at.gpus = r.gpu_ranks;
  r.gpu_step = predict_gpu_step(m, r.config.optim, r.gpu, r.gpu_ranks, checked_link(r.gpu, at), r.gpu_math);
  r.predicted_days =
      r.training.executed.tokens / (r.gpu_step.tokens_per_second_per_gpu * static_cast<double>(r.gpu_ranks)) / 86400.0;
  return r;
}

namespace {

void render_memory_markdown(const EstimateResult& r, const EstimateOptions& o, std::string& text) {
  const EstimateResult::Memory& mem = r.memory;
  const ParameterStateLayout& layout = r.state;
  const int64_t b = r.config.model.batch_size;
  Table mt;
  mt.header = {"memory at the peak", "bytes", "GB / GiB", "convention"};
  mt.right_align = {false, true, true, false};
  mt.add(
      {"parameters", fmt_int(mem.parameter), gb(mem.parameter),
       fmt::format(
           "{} B per parameter{}", layout.value_bytes,
           layout.weight_cache_bytes && !r.textbook ? " + bf16 copies of the matmul weights alive at the peak" : "")});
  mt.add({"gradients", fmt_int(mem.gradient), gb(mem.gradient), fmt::format("{} B per parameter", layout.grad_bytes)});
  mt.add({"optimizer state", fmt_int(mem.optimizer_state), gb(mem.optimizer_state),
          layout.optimizer_bytes == 12 ? "float32 master weights, AdamW m and v" : "AdamW m and v (float32)"});
  if (r.textbook) {
    mt.add({"activations", fmt_int(mem.activation), gb(mem.activation), "textbook list (see the table below)"});
  } else {
    mt.add({"activations", fmt_int(mem.activation), gb(mem.activation),
            "every tensor backward keeps, at the peak moment"});
    mt.add({"temporaries", fmt_int(mem.temporary), gb(mem.temporary), "live at the peak: " + mem.peak_moment});
  }
  mt.add({"**total**", fmt_int(mem.total), gb(mem.total), fmt::format("batch size {}", b)});
  out(text, "\n## Peak memory of a training step with AdamW\n\n{}", mt.markdown());
  if (mem.scratchpad_queried) {
    out(text,
        "plus oneDNN's scratchpad on this CPU (queried from its primitive descriptors, a known term of "
        "reckon's runtime, not of a GPU): {} B at the peak, {} B the largest.\n",
        fmt_int(mem.scratchpad_at_peak), fmt_int(mem.scratchpad_max));
  } else if (!mem.scratchpad_not_queried.empty()) {
    out(text,
        "oneDNN's scratchpad on this CPU: not queried: {} (reckon's runtime cannot run this step here; the "
        "figures above are arithmetic and stand)\n",
        mem.scratchpad_not_queried);
  }
  out(text, "\nmemory(B) = a·B + b with a = {} B per sample ({}), b = {} B ({}){}\n", fmt_int(mem.per_sample),
      gb(mem.per_sample), fmt_int(mem.fixed), gb(mem.fixed),
      r.textbook ? ""
                 : (mem.fit.exact ? fmt::format(", exact at B = {}", fmt::join(mem.fit.batches_checked, ", "))
                                  : std::string(", not exactly linear")));
  if (!r.textbook) {
    // The peak is the largest of several moments, each linear in B: at a large batch another moment can take
    // over (convex, piecewise linear). Say so rather than let the line stand for the replay.
    const __int128 on_line = static_cast<__int128>(mem.per_sample) * b + mem.fixed;
    if (on_line != mem.replayed_peak) {
      out(text,
          "at batch size {} the replayed peak is {} B, {:+} B off this line (the peak moves to another "
          "moment: {})\n",
          b, fmt_int(mem.replayed_peak), static_cast<double>(mem.replayed_peak - on_line), mem.peak_moment);
    }
  }
  out(text, "max batch in {} = {} B ({}): {}{}\n", o.memory_budget, fmt_int(mem.budget), gb(mem.budget), mem.max_batch,
      r.textbook ? "" : " (the step's replayed peak: peak(B) ≤ budget < peak(B + 1))");
  if (!mem.gib_budget.empty()) {
    out(text, "  (in {} = {} B: {})\n", mem.gib_budget, fmt_int(mem.gib_budget_bytes), mem.gib_max_batch);
  }
}

void render_variants_markdown(const EstimateResult& r, const EstimateOptions& o, std::string& text) {
  const int64_t b = r.config.model.batch_size, t = r.config.model.context_length;
  Table ps;
  ps.header = {"precision",
               "value + grad + optimizer (B/param)",
               "peak at B = " + std::to_string(b),
               "memory = a·B + b",
               "max batch in " + o.memory_budget,
               fmt::format("days on {} ({} peak)", r.gpu.name, "matching"),
               "who counts it so"};
  ps.right_align = {false, true, true, false, true, true, false};
  for (const EstimateResult::PrecisionRow& row : r.precisions) {
    const ParameterStateLayout& pl = row.layout;
    const std::string bpp = fmt::format("{} + {} + {} = {}{}", pl.value_bytes, pl.grad_bytes, pl.optimizer_bytes,
                                        pl.total(), pl.weight_cache_bytes ? " (+2 per matmul weight in the step)" : "");
    if (!row.unavailable.empty()) {
      ps.add({pl.name, bpp, row.unavailable.rfind("not built", 0) == 0 ? row.unavailable : "does not fit int64", "", "",
              "", pl.source});
    } else {
      ps.add({pl.name, bpp, gb(row.peak), fmt::format("{}·B + {}", fmt_int(row.per_sample), fmt_int(row.fixed)),
              fmt_int(row.max_batch), fmt::format("{:.1f} ({})", row.days, row.gpu_math), pl.source});
    }
  }
  out(text, "\n## Precisions side by side (as implemented: each its own replay; days at HFU {:.0f}%)\n\n{}",
      o.mfu * 100, ps.markdown());
  Table mx;
  mx.header = {"precision",
               "attention",
               "recompute",
               "activations + temporaries per sample",
               "memory = a·B + b",
               "max batch in " + o.memory_budget,
               "executed / model FLOPs",
               "days at MFU " + fmt::format("{:.0f}%", o.mfu * 100),
               "days at HFU " + fmt::format("{:.0f}%", o.mfu * 100)};
  mx.right_align = {false, false, false, true, false, true, true, true, true};
  for (const EstimateResult::VariantRow& row : r.matrix) {
    const std::string pname =
        row.is_config ? fmt::format("**{}**", precision_name(row.precision)) : precision_name(row.precision);
    if (!row.unavailable.empty()) {
      mx.add({pname, attention_name(row.attention), recompute_name(row.recompute),
              row.unavailable.rfind("not built", 0) == 0 ? row.unavailable : "does not fit int64", "", "", "", "", ""});
      continue;
    }
    mx.add({pname, attention_name(row.attention), recompute_name(row.recompute), gb(row.per_sample),
            fmt::format("{}·B + {}", fmt_int(row.per_sample), fmt_int(row.fixed)), fmt_int(row.max_batch),
            fmt::format("{:.3f}", row.executed_over_model), fmt::format("{:.1f}", row.days_at_mfu),
            fmt::format("{:.1f}", row.days_at_hfu)});
  }
  out(text,
      "\n## Precision × attention × recompute (as implemented, each its own replay; batch size {}; the config's "
      "rows in bold)\n\n{}",
      b, mx.markdown());
  out(text,
      "executed / model: the FLOPs the step runs (forward + backward + recompute; flash: causal rows and its "
      "backward's score recompute) over the model's forward + backward (causal attention, no recompute). "
      "Days: the {} training tokens at {:.0f}% of the GPU's peak for its precision (tf32 with --precision tf32), "
      "AdamW included — MFU counts model FLOPs, HFU executed ones.\n",
      sci(static_cast<double>(o.train_steps) * o.train_batch * t), o.mfu * 100);
}

void render_flops_markdown(const EstimateResult& r, const EstimateOptions& o, std::string& text) {
  const ModelConfig& m = r.config.model;
  const EstimateResult::Flops& f = r.flops;
  const StepFlops& sf = f.step;
  const int64_t tokens = f.tokens, n = r.num_parameters;
  Table ft;
  ft.header = {"FLOPs per step", "FLOPs", "per token", "convention"};
  ft.right_align = {false, true, true, false};
  ft.add({"forward", sci(sf.forward), sci(static_cast<double>(sf.forward) / tokens),
          m.attention == AttentionKind::flash
              ? "matmul 2·M·N·K; flash attention over the causal T(T+1)/2 entries; elementwise as executed"
              : "matmul 2·M·N·K; attention over the full T×T (what oneDNN computes); elementwise as executed"});
  ft.add({"backward", sci(sf.backward), sci(static_cast<double>(sf.backward) / tokens),
          fmt::format("backward / forward = {:.3f} (counted, not assumed){}",
                      static_cast<double>(sf.backward) / sf.forward,
                      m.attention == AttentionKind::flash ? "; flash recomputes its scores here" : "")});
  if (sf.recompute > 0) {
    ft.add({"recompute", sci(sf.recompute), sci(static_cast<double>(sf.recompute) / tokens),
            fmt::format("recompute = {}: forward work re-run in backward", recompute_name(m.recompute))});
  }
  ft.add({"AdamW", sci(sf.optimizer), sci(static_cast<double>(sf.optimizer) / tokens),
          fmt::format("{} FLOPs per parameter as the kernel executes them", adamw_flops_per_element(r.config.optim))});
  ft.add({"**step**", sci(sf.total()), sci(static_cast<double>(sf.total()) / tokens), ""});
  if (f.unavailable.empty()) {
    ft.add({"model FLOPs, causal attention", sci(f.model_causal), sci(f.model_causal / tokens),
            "MFU's numerator: forward + backward, no recompute, Q·Kᵀ and P·V over the T(T+1)/2 causal entries"});
    ft.add({"model FLOPs, full T×T", sci(f.model_full), sci(f.model_full / tokens),
            "the same over all T×T entries (PaLM's and Megatron-LM's formulas count so)"});
    ft.add({"executed (hardware) FLOPs", sci(f.hardware), sci(f.hardware / tokens),
            fmt::format("HFU's numerator: forward + backward + recompute as run = {:.3f} × model (causal)",
                        f.hardware / f.model_causal)});
  } else {
    ft.add({"model FLOPs", "does not fit int64", "", f.unavailable});
  }
  ft.add({"6·N·tokens rule", sci(6.0 * n * tokens), sci(6.0 * n), "Kaplan: ignores attention and elementwise work"});
  out(text, "\n## FLOPs (batch size {}{}, {} tokens)\n\n{}", m.batch_size,
      m.micro_batches() == 1 ? "" : fmt::format(" × {} micro-batches", m.micro_batches()), tokens, ft.markdown());
  const int64_t adamw_bytes_per_param = f.adamw_per_parameter.bytes_read + f.adamw_per_parameter.bytes_written;
  out(text, "AdamW per step: {} FLOPs and {} bytes moved ({} B per parameter: {})\n",
      fmt_int(adamw_flops_per_element(r.config.optim) * n), fmt_int((CheckedInt(adamw_bytes_per_param) * n).value()),
      adamw_bytes_per_param,
      r.state.optimizer_bytes == 12 ? "read g, master, m, v; write master, m, v and the bf16 parameter"
                                    : "read p, g, m, v; write p, m, v");
}

void render_training_markdown(const EstimateResult& r, const EstimateOptions& o, std::string& text) {
  const EstimateResult::Training& tr = r.training;
  const int64_t t = r.config.model.context_length;
  Table tt_table;
  tt_table.header = {"training time", "total FLOPs", "days", "convention"};
  tt_table.right_align = {false, true, true, false};
  tt_table.add({fmt::format("executed, at HFU {:.0f}%", o.mfu * 100), sci(tr.executed.counted_flops),
                fmt::format("{:.1f}", tr.executed.counted_days),
                "forward + backward + recompute + AdamW as counted per op (this config's implementation)"});
  if (tr.has_model) {
    tt_table.add({fmt::format("model, causal, at MFU {:.0f}%", o.mfu * 100), sci(tr.model_causal.counted_flops),
                  fmt::format("{:.1f}", tr.model_causal.counted_days), "model FLOPs (causal attention) + AdamW"});
    tt_table.add({fmt::format("model, full T×T, at MFU {:.0f}%", o.mfu * 100), sci(tr.model_full.counted_flops),
                  fmt::format("{:.1f}", tr.model_full.counted_days), "model FLOPs in the full T×T convention + AdamW"});
  }
  tt_table.add({"6·N rule", sci(tr.executed.six_n_flops), fmt::format("{:.1f}", tr.executed.six_n_days),
                "6 × parameters × tokens"});
  out(text,
      "\n## Training time: {} steps × batch {} × T {} = {} tokens on {} at {} ({:.1f} TFLOP/s), {:.0f}% "
      "utilization\n\n{}",
      o.train_steps, o.train_batch, t, sci(tr.executed.tokens), r.gpu.description, r.gpu_math, r.peak_flops / 1e12,
      o.mfu * 100, tt_table.markdown());
  if (tr.has_model) {
    out(text, "the same run at MFU {:.0f}% needs HFU {:.1f}% (executed / model FLOPs = {:.3f})\n", o.mfu * 100,
        100 * tr.hfu_needed, tr.hfu_needed / o.mfu);
  }
  Table gp;
  gp.header = {"GPU", "FP32 TFLOP/s", "TF32", "BF16", "HBM TB/s", "memory", "days at this HFU (fp32 / tf32 / bf16)"};
  gp.right_align = {false, true, true, true, true, true, false};
  for (const GpuSpec& g : gpu_specs()) {
    auto days = [&](const char* p) {
      return training_time(tr.train_step_flops, r.num_parameters, o.train_steps, o.train_batch, t, gpu_peak_flops(g, p),
                           o.mfu)
          .counted_days;
    };
    gp.add({g.description, fmt::format("{}", g.fp32_tflops), fmt::format("{}", g.tf32_tflops),
            fmt::format("{}", g.bf16_tflops), fmt::format("{}", g.hbm_tbps),
            g.memory_bytes % (int64_t{1} << 30) == 0 ? fmt::format("{} GiB", g.memory_bytes >> 30)
                                                     : fmt::format("{:.0f} GB", g.memory_bytes / 1e9),
            fmt::format("{:.0f} / {:.0f} / {:.0f}", days("fp32"), days("tf32"), days("bf16"))});
  }
  out(text, "\n{}", gp.markdown());
}

// The step predicted op by op on the GPU: per op × phase its time, what bounds it and its share; then the step.
void render_gpu_step_markdown(const EstimateResult& r, const EstimateOptions& o, std::string& text) {
  const GpuStep& g = r.gpu_step;
  const ModelConfig& m = r.config.model;
  Table t;
  t.header = {"op", "phase", "kernels", "ms", "bound", "share"};
  t.right_align = {false, false, true, true, false, true};
  std::vector<GpuOpTime> rows = g.ops;
  std::stable_sort(rows.begin(), rows.end(),
                   [](const GpuOpTime& a, const GpuOpTime& b) { return a.seconds > b.seconds; });
  for (const GpuOpTime& row : rows) {
    t.add({row.key.op, phase_name(row.key.phase), fmt_int(row.kernels), fmt::format("{:.3f}", row.seconds * 1e3),
           row.bound, fmt::format("{:.1f}%", 100 * row.seconds / (g.compute_seconds + g.communication_seconds))});
  }
  out(text,
      "\n## Predicted step on {} ({}, batch {} per GPU{}): op by op, kernel-level constants only "
      "(estimators/gpu_step.h)\n\n{}",
      r.gpu.description, r.gpu_math,
      fmt::format("{}{}", m.batch_size,
                  m.micro_batches() == 1 ? "" : fmt::format(" × {} micro-batches", m.micro_batches())),
      r.gpu_ranks > 1 ? fmt::format(", {} GPUs, ZeRO-{}", r.gpu_ranks, m.zero_stage) : "", t.markdown());
  out(text,
      "step {:.2f} ms = compute {:.2f} ms + exposed communication {:.2f} ms (of {:.2f} ms, the rest overlapped); "
      "{:.0f} tokens/s per GPU; MFU {:.1f}% (causal) / {:.1f}% (full T×T), HFU {:.1f}% of {:.0f} TFLOP/s; the "
      "roofline floor of the same work {:.2f} ms\n",
      g.seconds * 1e3, g.compute_seconds * 1e3, g.exposed_communication_seconds * 1e3, g.communication_seconds * 1e3,
      g.tokens_per_second_per_gpu, 100 * g.mfu_causal, 100 * g.mfu_full, 100 * g.hfu, g.peak_flops / 1e12,
      g.roofline_seconds * 1e3);
  out(text,
      "training days at the predicted step: {:.1f} on {} GPU(s) = {:.0f} GPU-days (the one-GPU rows above: {:.0f} "
      "at MFU {:.0f}%); constants: {}\n",
      r.predicted_days, r.gpu_ranks, r.predicted_days * static_cast<double>(r.gpu_ranks),
      r.training.has_model ? r.training.model_causal.counted_days : 0.0, o.mfu * 100, gpu_kernels(r.gpu).source);
}

nlohmann::json gpu_step_json(const EstimateResult& r) {
  const GpuStep& g = r.gpu_step;
  nlohmann::json rows = nlohmann::json::array();
  for (const GpuOpTime& row : g.ops) {
    rows.push_back({{"op", row.key.op},
                    {"phase", phase_name(row.key.phase)},
                    {"seconds", row.seconds},
                    {"bound", row.bound},
                    {"kernels", row.kernels},
                    {"flops", row.flops},
                    {"bytes", row.bytes}});
  }
  return {{"gpu", g.gpu},
          {"gpus", r.gpu_ranks},
          {"zero_stage", r.config.model.zero_stage},
          {"batch_per_gpu", r.config.model.batch_size},
          {"gradient_accumulation_steps", r.config.model.micro_batches()},
          {"seconds", g.seconds},
          {"compute_seconds", g.compute_seconds},
          {"communication_seconds", g.communication_seconds},
          {"exposed_communication_seconds", g.exposed_communication_seconds},
          {"roofline_seconds", g.roofline_seconds},
          {"tokens_per_second_per_gpu", g.tokens_per_second_per_gpu},
          {"mfu", g.mfu_causal},
          {"mfu_full_convention", g.mfu_full},
          {"hfu", g.hfu},
          {"peak_flops", g.peak_flops},
          {"training_days", r.predicted_days},
          {"constants", gpu_kernels(r.gpu).source},
          {"ops", rows}};
}

}  // namespace

// "+1,638,400", "-307,200", "0".
std::string signed_int(int64_t x) {
  if (x == 0) return "0";
  return (x > 0 ? "+" : "-") + fmt_int(x > 0 ? x : -x);
}

std::string render_markdown(const EstimateResult& r, const EstimateOptions& o) {
  std::string text;
  const ModelConfig& m = r.config.model;
  const ParameterStateLayout& layout = r.state;
  out(text, "config: {} | {}\n", r.config.preset, describe(m));
  out(text,
      "conventions: precision {} ({} + {} + {} B per parameter: value + gradient + optimizer state{}); "
      "GB = 10⁹ B, GiB = 2³⁰ B; activations: {}\n",
      precision_name(m.precision), layout.value_bytes, layout.grad_bytes, layout.optimizer_bytes,
      layout.weight_cache_bytes ? ", + 2 B per matmul weight for its bf16 copy during the step" : "",
      r.textbook
          ? "textbook (the problem statement's list, one float32 output-sized tensor per item)"
          : "as implemented by reckon (what its backward keeps, at each tensor's dtype; proven by `reckon reconcile`)");
  Table pt;
  pt.header = {"parameters", "count", "formula"};
  pt.right_align = {false, true, false};
  for (const EstimateResult::ParameterRow& row : r.parameters) pt.add({row.item, fmt_int(row.count), row.formula});
  pt.add({"**total**", fmt_int(r.num_parameters), fmt::format("{:.3f} B parameters", r.num_parameters / 1e9)});
  if (r.published_parameters > 0) {
    const int64_t diff = r.num_parameters - r.published_parameters;
    pt.add({"published (model card)", fmt_int(r.published_parameters),
            diff == 0 ? std::string("reckon's count is exact") : "reckon differs by " + signed_int(diff)});
  }
  out(text, "\n## Parameters\n\n{}", pt.markdown());
  if (!r.counterpart.empty()) {
    Table ct;
    ct.header = {"parameters", r.config.preset, r.counterpart, "difference"};
    ct.right_align = {false, true, true, true};
    int64_t ours = 0, theirs = 0;
    for (const EstimateResult::CounterpartRow& row : r.counterpart_rows) {
      ct.add({row.item, fmt_int(row.ours), fmt_int(row.theirs), signed_int(row.ours - row.theirs)});
      ours += row.ours, theirs += row.theirs;
    }
    ct.add({"**total**", fmt_int(ours), fmt_int(theirs), signed_int(ours - theirs)});
    out(text,
        "\n## {} vs {}\n\nTwo models share the name: gpt2-* are the accounting problem's (shared/seeds: RMSNorm, no "
        "biases, a SiLU MLP, an untied head, no learned positions), openai-gpt2* the models OpenAI released (LayerNorm "
        "with β, biases on every linear, GELU, 1,024 learned positions, the head tied to the embedding).\n\n{}",
        r.config.preset, r.counterpart, ct.markdown());
  }
  render_memory_markdown(r, o, text);
  render_variants_markdown(r, o, text);
  Table at;
  at.header = {"textbook item", "textbook floats", "reckon keeps", "floats", "why"};
  at.right_align = {false, true, false, true, false};
  int64_t sum_t = 0, sum_i = 0;
  for (const ActivationRow& row : r.activations) {
    at.add({row.item, fmt_int(row.textbook_floats), row.implemented, fmt_int(row.implemented_floats), row.why});
    sum_t += row.textbook_floats;
    sum_i += row.implemented_floats;
  }
  at.add({"**total**", fmt_int(sum_t), "", fmt_int(sum_i),
          fmt::format("{:+.1f}% vs textbook", 100.0 * (sum_i - sum_t) / sum_t)});
  out(text, "\n## Activations: textbook vs implemented (batch size {})\n\n{}", m.batch_size, at.markdown());
  render_flops_markdown(r, o, text);
  render_training_markdown(r, o, text);
  render_gpu_step_markdown(r, o, text);
  if (r.cluster) text += r.cluster->text;
  return text;
}

nlohmann::json render_json(const EstimateResult& r, const EstimateOptions& o) {
  const ModelConfig& m = r.config.model;
  const int64_t n = r.num_parameters;
  const EstimateResult::Memory& mem = r.memory;
  nlohmann::json j;
  j["config"] = {{"preset", r.config.preset}, {"description", describe(m)}};
  j["num_parameters"] = n;
  if (r.published_parameters > 0) j["published_parameters"] = r.published_parameters;
  if (!r.counterpart.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    for (const EstimateResult::CounterpartRow& row : r.counterpart_rows) {
      rows.push_back({{"item", row.item}, {"this", row.ours}, {"counterpart", row.theirs}});
    }
    j["counterpart"] = {{"preset", r.counterpart}, {"parameters", rows}};
  }
  if (mem.scratchpad_queried) {
    j["memory_scratchpad"] = {{"at_peak_bytes", mem.scratchpad_at_peak},
                              {"max_bytes", mem.scratchpad_max},
                              {"peak_bytes_with_scratchpad", mem.peak_with_scratchpad}};
  } else if (!mem.scratchpad_not_queried.empty()) {
    j["memory_scratchpad"] = {{"not_queried", mem.scratchpad_not_queried}};
  }
  j["memory"] = {{"activations_convention", o.activations},
                 {"peak_bytes", mem.total},
                 {"per_sample_bytes", mem.per_sample},
                 {"fixed_bytes", mem.fixed},
                 {"budget_bytes", mem.budget},
                 {"max_batch", mem.max_batch},
                 {"peak_breakdown",
                  {{"parameter", mem.parameter},
                   {"gradient", mem.gradient},
                   {"optimizer_state", mem.optimizer_state},
                   {"activation", mem.activation},
                   {"temporary", mem.temporary}}}};
  nlohmann::json ps = nlohmann::json::array();
  for (const EstimateResult::PrecisionRow& row : r.precisions) {
    const ParameterStateLayout& pl = row.layout;
    nlohmann::json one = {{"precision", pl.name},
                          {"value_bytes_per_param", pl.value_bytes},
                          {"grad_bytes_per_param", pl.grad_bytes},
                          {"optimizer_bytes_per_param", pl.optimizer_bytes},
                          {"weight_cache_bytes_per_matmul_param", pl.weight_cache_bytes},
                          {"parameter_state_bytes", (CheckedInt(pl.total()) * n).value()},
                          {"gpu_math", row.gpu_math}};
    if (!row.unavailable.empty())
      one["unavailable"] = row.unavailable;
    else
      one.update({{"peak_bytes", row.peak},
                  {"per_sample_bytes", row.per_sample},
                  {"fixed_bytes", row.fixed},
                  {"max_batch", row.max_batch},
                  {"counted_days", row.days}});
    ps.push_back(one);
  }
  j["precisions"] = ps;
  nlohmann::json mx = nlohmann::json::array(), att = nlohmann::json::array();
  for (const EstimateResult::VariantRow& row : r.matrix) {
    nlohmann::json one = {{"precision", precision_name(row.precision)},
                          {"grad_dtype", grad_dtype_name(row.grad_dtype)},
                          {"attention", attention_name(row.attention)},
                          {"recompute", recompute_name(row.recompute)}};
    if (!row.unavailable.empty()) {
      one["unavailable"] = row.unavailable;
      mx.push_back(one);
      continue;
    }
    one.update({{"per_sample_bytes", row.per_sample},
                {"fixed_bytes", row.fixed},
                {"max_batch", row.max_batch},
                {"model_flops_causal", row.model_causal},
                {"model_flops_full", row.model_full},
                {"hardware_flops", row.hardware},
                {"step_flops", row.step_flops},
                {"days_at_mfu", row.days_at_mfu},
                {"days_at_hfu", row.days_at_hfu}});
    mx.push_back(one);
    if (row.precision == m.precision && row.recompute == m.recompute) {  // the config's attention choices
      att.push_back({{"attention", attention_name(row.attention)},
                     {"per_sample_bytes", row.per_sample},
                     {"fixed_bytes", row.fixed},
                     {"max_batch", row.max_batch},
                     {"step_flops", row.step_flops},
                     {"counted_days", row.days_at_hfu}});
    }
  }
  j["matrix"] = mx;
  j["attention"] = att;
  const EstimateResult::Flops& f = r.flops;
  const int64_t adamw_bytes = f.adamw_per_parameter.bytes_read + f.adamw_per_parameter.bytes_written;
  j["flops"] = {{"forward", f.step.forward},
                {"backward", f.step.backward},
                {"recompute", f.step.recompute},
                {"optimizer", f.step.optimizer},
                {"step", f.step.total()},
                {"model_causal", f.unavailable.empty() ? f.model_causal_exact : nlohmann::json()},
                {"model_full", f.unavailable.empty() ? f.model_full_exact : nlohmann::json()},
                {"hardware", f.step.forward + f.step.backward + f.step.recompute},
                {"six_n_per_step", 6.0 * n * f.tokens},
                {"adamw_flops", adamw_flops_per_element(r.config.optim) * n},
                {"adamw_bytes", (CheckedInt(adamw_bytes) * n).value()}};
  const EstimateResult::Training& tr = r.training;
  j["training"] = {{"gpu", r.gpu.name},
                   {"precision", precision_name(m.precision)},
                   {"gpu_math", r.gpu_math},
                   {"mfu", o.mfu},
                   {"tokens", tr.executed.tokens},
                   {"counted_flops", tr.executed.counted_flops},
                   {"six_n_flops", tr.executed.six_n_flops},
                   {"counted_days", tr.executed.counted_days},
                   {"six_n_days", tr.executed.six_n_days},
                   {"days_at_hfu", tr.executed.counted_days}};
  if (tr.has_model) {
    j["training"].update({{"days_at_mfu", tr.model_causal.counted_days},
                          {"days_at_mfu_full_convention", tr.model_full.counted_days},
                          {"model_flops_causal", tr.model_causal.counted_flops},
                          {"model_flops_full", tr.model_full.counted_flops},
                          {"hfu_needed_at_mfu", tr.hfu_needed}});
  }
  if (r.cluster) j["cluster"] = r.cluster->json;
  j["gpu_step"] = gpu_step_json(r);
  return j;
}

EstimateReport make_estimate_report(const EstimateOptions& o) {
  try {
    const EstimateResult r = compute_estimate(o);
    return EstimateReport{render_markdown(r, o), json_text(render_json(r, o), 2)};
  } catch (const SizeOverflow& e) {
    // The config's own step fits (checked first); a count estimate derives from it (the step at batch 2 and 3 for
    // the per-sample fits, the ranks of --gpus) does not: bad input, named by the fields that scale it.
    const ModelConfig& m = checked_inputs(o).config.model;
    throw std::invalid_argument(fmt::format(
        "batch_size {} × context_length {} × num_layers {} (d_model {}{}): a count estimate derives from this "
        "config does not fit int64 ({}); lower context_length, num_layers or batch_size{}",
        m.batch_size, m.context_length, m.num_layers, m.d_model,
        o.cluster.gpus_given ? fmt::format(", --gpus {}", o.cluster.gpus) : "", e.what(),
        o.cluster.gpus_given ? ", or --gpus" : ""));
  }
}

int run_estimate(const EstimateOptions& o) {
  const EstimateReport report = make_estimate_report(o);
  if (!o.json_path.empty()) write_output_file("--json", o.json_path, report.json);
  fmt::print("{}", report.text);
  if (!o.json_path.empty()) fmt::print("\nwrote {}\n", o.json_path);
  return 0;
}

}  // namespace reckon
