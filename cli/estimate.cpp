#include "cli/estimate.h"

#include <cmath>
#include <map>
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

EstimateReport make_estimate_report(const EstimateOptions& o) {
  // Every input is checked before any figure is computed: a bad value is one message naming the flag or field
  // and its allowed range, and nothing is printed or written.
  TrainConfig config = o.config_file.empty() ? preset_config(o.preset) : load_config_file(o.config_file);
  for (const std::string& kv : o.overrides) apply_override(config, kv);
  // --precision sets the config's field (tf32: fp32 training, TF32 matmul peak); the GPU peak follows it.
  if (!o.precision.empty()) {
    if (o.precision != "fp32" && o.precision != "tf32" && o.precision != "amp-bf16" && o.precision != "bf16") {
      throw std::invalid_argument(fmt::format(
          "--precision: '{}' is not allowed; allowed values are fp32, tf32, amp-bf16, bf16", o.precision));
    }
    apply_override(config, "precision=" + (o.precision == "tf32" ? std::string("fp32") : o.precision));
  }
  const std::string gpu_math = o.precision == "tf32" ? "tf32" : gpu_math_for(config.model.precision);
  if (o.zero_given) apply_override(config, fmt::format("zero_stage={}", o.zero_stage));
  if (o.batch_size != 0) {  // 0: the config's
    check_range("--batch-size", o.batch_size, 1, kMaxEstimateBatch);
    config.model.batch_size = o.batch_size;
  }
  validate(config);
  if (o.activations != "implemented" && o.activations != "textbook") {
    throw std::invalid_argument(fmt::format("--activations: '{}' is not allowed; allowed values are implemented, textbook",
                                            o.activations));
  }
  check_range("--mfu", o.mfu, kMinMfu, 1.0);
  check_range("--train-steps", o.train_steps, 1, kMaxTrainSteps);
  check_range("--train-batch", o.train_batch, 1, kMaxTrainBatch);
  check_token_count(o.train_steps, o.train_batch, config.model.context_length);
  const int64_t budget = parse_bytes("--memory-budget", o.memory_budget);
  const GpuSpec& gpu = gpu_spec(o.gpu);
  const double peak = gpu_peak_flops(gpu, gpu_math);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);
  check_distinct_paths({{"--config", o.config_file}, {"--json", o.json_path}});
  check_counts_fit(config.model, config.optim);

  std::string text;  // printed whole once every figure is computed
  const ModelConfig& m = config.model;
  const bool textbook = o.activations == "textbook";
  const ParameterLayout params = parameter_layout(m);
  const int64_t n = params.total();
  const int64_t b = m.batch_size, t = m.context_length;
  nlohmann::json j;
  j["config"] = {{"preset", config.preset}, {"description", describe(m)}};

  const ParameterStateLayout layout = parameter_state_layout(m.precision, m.grad_dtype);
  out(text, "config: {} | {}\n", config.preset, describe(m));
  out(text, "conventions: precision {} ({} + {} + {} B per parameter: value + gradient + optimizer state{}); "
            "GB = 10⁹ B, GiB = 2³⁰ B; activations: {}\n",
      precision_name(m.precision), layout.value_bytes, layout.grad_bytes, layout.optimizer_bytes,
      layout.weight_cache_bytes ? ", + 2 B per matmul weight for its bf16 copy during the step" : "",
      textbook ? "textbook (the problem statement's list, one float32 output-sized tensor per item)"
               : "as implemented by reckon (what its backward keeps, at each tensor's dtype; proven by `reckon reconcile`)");

  // ---- parameters
  Table pt;
  pt.header = {"parameters", "count", "formula"};
  pt.right_align = {false, true, false};
  // Counts summed from the parameter layout (model/layout.h); the formulas say what each row is.
  const int64_t ffn_mats = m.ffn == FfnKind::swiglu ? 3 : 2;
  auto role = [&](ParamRole r) { return fmt_int(params.role_total(r)); };
  pt.add({"token embedding", role(ParamRole::token_embedding), "V·D"});
  if (m.position == Position::learned) pt.add({"position embedding", role(ParamRole::position_embedding), "T·D"});
  pt.add({"attention (all layers)", role(ParamRole::attention), "L·4·D²"});
  pt.add({fmt::format("ffn ({}, all layers)", ffn_kind_name(m.ffn)), role(ParamRole::ffn),
          fmt::format("L·{}·D·d_ff", ffn_mats)});
  pt.add({"RMSNorm gains", role(ParamRole::norm_gain), "L·2·D + D"});
  pt.add({"LM head", role(ParamRole::lm_head), m.tie_embeddings ? "tied to the embedding" : "V·D (untied)"});
  pt.add({"**total**", fmt_int(n), fmt::format("{:.3f} B parameters", n / 1e9)});
  out(text, "\n## Parameters\n\n{}", pt.markdown());
  j["num_parameters"] = n;

  // ---- memory
  MemoryEstimateOptions pure;
  pure.onednn_scratchpad = false;
  const MemoryEstimate impl = estimate_step_memory(m, pure);
  const LinearMemory lin_impl = memory_linear_in_batch(m, pure);
  ModelConfig one_sample = m;
  one_sample.batch_size = 1;
  const int64_t tb_act_per_sample = 4 * textbook_activation_floats(one_sample);
  const int64_t fixed = (CheckedInt(layout.total()) * n).value();  // parameters, gradients, optimizer state
  const int64_t a = textbook ? tb_act_per_sample : lin_impl.per_sample;
  const int64_t bconst = textbook ? fixed : lin_impl.fixed;
  Table mt;
  mt.header = {"memory at the peak", "bytes", "GB / GiB", "convention"};
  mt.right_align = {false, true, true, false};
  auto cat = [&](Category c) { return impl.peak_breakdown[static_cast<int>(c)]; };
  // Parameter state: by the layout (textbook), or the replay's bytes at the peak (amp-bf16's weight copies
  // included, each tensor 64-byte rounded).
  const int64_t param_bytes = textbook ? (CheckedInt(layout.value_bytes) * n).value() : cat(Category::parameter);
  const int64_t grad_bytes = textbook ? (CheckedInt(layout.grad_bytes) * n).value() : cat(Category::gradient);
  const int64_t state_bytes = textbook ? (CheckedInt(layout.optimizer_bytes) * n).value() : cat(Category::optimizer_state);
  mt.add({"parameters", fmt_int(param_bytes), gb(param_bytes),
          fmt::format("{} B per parameter{}", layout.value_bytes,
                      layout.weight_cache_bytes && !textbook ? " + bf16 copies of the matmul weights alive at the peak" : "")});
  mt.add({"gradients", fmt_int(grad_bytes), gb(grad_bytes), fmt::format("{} B per parameter", layout.grad_bytes)});
  mt.add({"optimizer state", fmt_int(state_bytes), gb(state_bytes),
          layout.optimizer_bytes == 12 ? "float32 master weights, AdamW m and v" : "AdamW m and v (float32)"});
  int64_t total = 0;
  if (textbook) {
    const int64_t act = (CheckedInt(tb_act_per_sample) * b).value();
    mt.add({"activations", fmt_int(act), gb(act), "textbook list (see the table below)"});
    total = (CheckedInt(fixed) + act).value();
  } else {
    mt.add({"activations", fmt_int(cat(Category::activation)), gb(cat(Category::activation)),
            "every tensor backward keeps, at the peak moment"});
    mt.add({"temporaries", fmt_int(cat(Category::temporary)), gb(cat(Category::temporary)),
            "live at the peak: " + impl.peak_moment});
    total = impl.peak_total;
  }
  mt.add({"**total**", fmt_int(total), gb(total), fmt::format("batch size {}", b)});
  out(text, "\n## Peak memory of a training step with AdamW\n\n{}", mt.markdown());
  if (!textbook && o.query_scratchpad) {
    // The scratchpad is asked of oneDNN; a shape beyond oneDNN's own limits (a dimension above 2^31 − 1) is an
    // answer too: reckon's runtime could not run this step on this CPU.
    try {
      const MemoryEstimate with_sp = estimate_step_memory(m);
      out(text, "plus oneDNN's scratchpad on this CPU (queried from its primitive descriptors, a known term of "
                "reckon's runtime, not of a GPU): {} B at the peak, {} B the largest.\n",
          fmt_int(with_sp.scratchpad_at_peak), fmt_int(with_sp.scratchpad_max));
      j["memory_scratchpad"] = {{"at_peak_bytes", with_sp.scratchpad_at_peak}, {"max_bytes", with_sp.scratchpad_max},
                                {"peak_bytes_with_scratchpad", with_sp.peak_total}};
    } catch (const std::invalid_argument& e) {
      const std::string why = m.dtypes().act == DType::bf16 && !bf16_matmul_unavailable_reason().empty()
                                  ? bf16_matmul_unavailable_reason()
                                  : std::string(e.what());
      out(text, "oneDNN's scratchpad on this CPU: not queried: {} (reckon's runtime cannot run this step here; the "
                "figures above are arithmetic and stand)\n",
          why);
      j["memory_scratchpad"] = {{"not_queried", why}};
    }
  }
  // Max batch: textbook is a·B + b by construction; as implemented, the replay decides (each tensor is rounded
  // up to 64 B, so between the batch sizes checked the peak can sit a few bytes off the line).
  auto max_batch_for = [&](int64_t bytes) {
    if (!textbook) return max_batch_in_budget(m, bytes, pure, lin_impl);
    return a > 0 && bytes > bconst ? (bytes - bconst) / a : 0;
  };
  const int64_t max_batch = max_batch_for(budget);
  out(text, "\nmemory(B) = a·B + b with a = {} B per sample ({}), b = {} B ({}){}\n", fmt_int(a), gb(a), fmt_int(bconst),
             gb(bconst), textbook ? "" : (lin_impl.exact ? fmt::format(", exact at B = {}", fmt::join(lin_impl.batches_checked, ", "))
                                               : std::string(", not exactly linear")));
  if (!textbook) {
    // The peak is the largest of several moments, each linear in B: at a large batch another moment can take
    // over (convex, piecewise linear). Say so rather than let the line stand for the replay.
    const __int128 on_line = static_cast<__int128>(a) * b + bconst;
    if (on_line != impl.peak_total) {
      out(text, "at batch size {} the replayed peak is {} B, {:+} B off this line (the peak moves to another "
                "moment: {})\n",
          b, fmt_int(impl.peak_total), static_cast<double>(impl.peak_total - on_line), impl.peak_moment);
    }
  }
  out(text, "max batch in {} = {} B ({}): {}{}\n", o.memory_budget, fmt_int(budget), gb(budget), max_batch,
      textbook ? "" : " (the step's replayed peak: peak(B) ≤ budget < peak(B + 1))");
  if (o.memory_budget.find("GB") != std::string::npos && o.memory_budget.find("GiB") == std::string::npos) {
    // The same number read as GiB, since budgets are quoted both ways ("80 GB" cards hold 80 GiB).
    const std::string alt = o.memory_budget.substr(0, o.memory_budget.find("GB")) + "GiB";
    try {
      const int64_t budget2 = parse_bytes("--memory-budget", alt);
      out(text, "  (in {} = {} B: {})\n", alt, fmt_int(budget2), max_batch_for(budget2));
    } catch (const std::invalid_argument&) {
      // beyond the allowed range as GiB: the GB answer above is the one asked for
    }
  }
  j["memory"] = {{"activations_convention", o.activations}, {"peak_bytes", total}, {"per_sample_bytes", a},
                 {"fixed_bytes", bconst}, {"budget_bytes", budget}, {"max_batch", max_batch},
                 {"peak_breakdown", {{"parameter", param_bytes}, {"gradient", grad_bytes}, {"optimizer_state", state_bytes},
                                     {"activation", textbook ? (CheckedInt(tb_act_per_sample) * b).value() : cat(Category::activation)},
                                     {"temporary", textbook ? 0 : cat(Category::temporary)}}}};

  // ---- Variants of the config in precision × attention × recompute, each from its own replays (as implemented)
  // at this budget and training run; memoised, so the tables below share them and the config's own row reuses
  // its fit.
  struct Variant {
    LinearMemory lin;
    int64_t max_batch = 0;
    UtilizationFlopsLinear flops;  // exact fits; at(B) in double (a large B can pass int64 where the fit does not)
    std::string overflow;          // non-empty: a count of this variant does not fit int64 (the row says so)
  };
  std::map<std::tuple<Precision, GradDType, AttentionKind, Recompute>, Variant> variants;
  auto variant_config = [&](Precision p, GradDType g, AttentionKind att, Recompute rc) {
    ModelConfig vm = m;
    vm.precision = p, vm.grad_dtype = g, vm.attention = att, vm.recompute = rc;
    return vm;
  };
  auto variant = [&](Precision p, GradDType g, AttentionKind att, Recompute rc) -> const Variant& {
    const auto key = std::make_tuple(p, g, att, rc);
    auto it = variants.find(key);
    if (it != variants.end()) return it->second;
    const ModelConfig vm = variant_config(p, g, att, rc);
    const bool same = p == m.precision && g == m.grad_dtype && att == m.attention && rc == m.recompute;
    Variant v;
    try {
      v.lin = same ? lin_impl : memory_linear_in_batch(vm, pure, false);
      v.max_batch = max_batch_in_budget(vm, budget, pure, v.lin);
      v.flops = utilization_flops_linear_in_batch(vm, config.optim);
    } catch (const SizeOverflow& e) {
      v.overflow = e.what();  // e.g. naive attention's B·H·T² beside a flash config that fits
    }
    return variants.emplace(key, v).first->second;
  };
  // Days on the GPU for the training run: model FLOPs (causal) at MFU = --mfu, or executed FLOPs at HFU = --mfu;
  // AdamW's FLOPs added to both.
  auto days_at = [&](double step_flops, double gpu_peak) {
    return training_time(step_flops, n, o.train_steps, o.train_batch, t, gpu_peak, o.mfu).counted_days;
  };
  // FLOPs at batch size `batch` (a + b): exact integers where they fit int64, else the double of the exact fit.
  auto at_batch = [](const UtilizationFlopsLinear::Fit& a, const UtilizationFlopsLinear::Fit& extra, int64_t batch) {
    try {
      return nlohmann::json((CheckedInt(a.per_sample) * batch + a.fixed + CheckedInt(extra.per_sample) * batch + extra.fixed).value());
    } catch (const SizeOverflow&) {
      return nlohmann::json(a.at(batch) + extra.at(batch));
    }
  };
  auto model_step = [&](const Variant& v) { return v.flops.model_causal.at(o.train_batch) + v.flops.optimizer.at(o.train_batch); };
  auto executed_step = [&](const Variant& v) { return v.flops.hardware.at(o.train_batch) + v.flops.optimizer.at(o.train_batch); };

  // ---- "is it 16 or 18 bytes per parameter?", "why does AMP use more memory?": every precision side by side.
  Table ps;
  ps.header = {"precision", "value + grad + optimizer (B/param)", "peak at B = " + std::to_string(b), "memory = a·B + b",
               "max batch in " + o.memory_budget, fmt::format("days on {} ({} peak)", gpu.name, "matching"),
               "who counts it so"};
  ps.right_align = {false, true, true, false, true, true, false};
  nlohmann::json ps_json = nlohmann::json::array();
  for (const ParameterStateLayout& pl : parameter_state_layouts()) {
    const Variant& pv = variant(pl.precision, pl.grad_dtype, m.attention, m.recompute);
    const bool same = pl.precision == m.precision && pl.grad_dtype == m.grad_dtype;
    const char* math = gpu_math_for(pl.precision);
    const std::string bpp = fmt::format("{} + {} + {} = {}{}", pl.value_bytes, pl.grad_bytes, pl.optimizer_bytes,
                                        pl.total(), pl.weight_cache_bytes ? " (+2 per matmul weight in the step)" : "");
    nlohmann::json row = {{"precision", pl.name}, {"value_bytes_per_param", pl.value_bytes},
                          {"grad_bytes_per_param", pl.grad_bytes}, {"optimizer_bytes_per_param", pl.optimizer_bytes},
                          {"weight_cache_bytes_per_matmul_param", pl.weight_cache_bytes},
                          {"parameter_state_bytes", (CheckedInt(pl.total()) * n).value()}, {"gpu_math", math}};
    int64_t ppeak = 0;
    std::string overflow = pv.overflow;
    try {
      if (overflow.empty()) ppeak = same ? impl.peak_total : estimate_step_memory(variant_config(pl.precision, pl.grad_dtype, m.attention, m.recompute), pure).peak_total;
    } catch (const SizeOverflow& e) {
      overflow = e.what();
    }
    if (!overflow.empty()) {
      ps.add({pl.name, bpp, overflow.rfind("not built", 0) == 0 ? overflow : "does not fit int64", "", "", "", pl.source});
      row["unavailable"] = overflow;
    } else {
      const double pdays = days_at(executed_step(pv), gpu_peak_flops(gpu, math));
      ps.add({pl.name, bpp, gb(ppeak), fmt::format("{}·B + {}", fmt_int(pv.lin.per_sample), fmt_int(pv.lin.fixed)),
              fmt_int(pv.max_batch), fmt::format("{:.1f} ({})", pdays, math), pl.source});
      row.update({{"peak_bytes", ppeak}, {"per_sample_bytes", pv.lin.per_sample}, {"fixed_bytes", pv.lin.fixed},
                  {"max_batch", pv.max_batch}, {"counted_days", pdays}});
    }
    ps_json.push_back(row);
  }
  out(text, "\n## Precisions side by side (as implemented: each its own replay; days at HFU {:.0f}%)\n\n{}", o.mfu * 100,
      ps.markdown());
  j["precisions"] = ps_json;

  // ---- precision × attention × recompute (every attention × recompute choice): what each choice keeps per sample, the batch it
  // allows, the FLOPs it executes against the model's own, and the days at MFU and at HFU = --mfu.
  Table mx;
  mx.header = {"precision", "attention", "recompute", "activations + temporaries per sample", "memory = a·B + b",
               "max batch in " + o.memory_budget, "executed / model FLOPs", "days at MFU " + fmt::format("{:.0f}%", o.mfu * 100),
               "days at HFU " + fmt::format("{:.0f}%", o.mfu * 100)};
  mx.right_align = {false, false, false, true, false, true, true, true, true};
  nlohmann::json mx_json = nlohmann::json::array(), att_json = nlohmann::json::array();
  for (Precision p : {Precision::fp32, Precision::amp_bf16, Precision::bf16}) {
    const double gpu_peak = gpu_peak_flops(gpu, o.precision == "tf32" && p == Precision::fp32 ? "tf32" : gpu_math_for(p));
    const GradDType g = p == m.precision ? m.grad_dtype : GradDType::automatic;
    for (AttentionKind att : {AttentionKind::naive, AttentionKind::flash})
      for (Recompute rc : {Recompute::none, Recompute::attention, Recompute::full}) {
        const Variant& vr = variant(p, g, att, rc);
        const bool mine = p == m.precision && att == m.attention && rc == m.recompute;
        const std::string pname = mine ? fmt::format("**{}**", precision_name(p)) : precision_name(p);
        nlohmann::json row = {{"precision", precision_name(p)}, {"grad_dtype", grad_dtype_name(g)},
                              {"attention", attention_name(att)}, {"recompute", recompute_name(rc)}};
        if (!vr.overflow.empty()) {
          mx.add({pname, attention_name(att), recompute_name(rc),
                  vr.overflow.rfind("not built", 0) == 0 ? vr.overflow : "does not fit int64", "", "", "", "", ""});
          row["unavailable"] = vr.overflow;
          mx_json.push_back(row);
          continue;
        }
        const double mdays = days_at(model_step(vr), gpu_peak), hdays = days_at(executed_step(vr), gpu_peak);
        const double ratio = vr.flops.hardware.at(b) / vr.flops.model_causal.at(b);
        mx.add({pname, attention_name(att), recompute_name(rc), gb(vr.lin.per_sample),
                fmt::format("{}·B + {}", fmt_int(vr.lin.per_sample), fmt_int(vr.lin.fixed)), fmt_int(vr.max_batch),
                fmt::format("{:.3f}", ratio), fmt::format("{:.1f}", mdays), fmt::format("{:.1f}", hdays)});
        const nlohmann::json step_flops = at_batch(vr.flops.hardware, vr.flops.optimizer, b);
        row.update({{"per_sample_bytes", vr.lin.per_sample}, {"fixed_bytes", vr.lin.fixed}, {"max_batch", vr.max_batch},
                    {"model_flops_causal", at_batch(vr.flops.model_causal, {}, b)},
                    {"model_flops_full", at_batch(vr.flops.model_full, {}, b)},
                    {"hardware_flops", at_batch(vr.flops.hardware, {}, b)}, {"step_flops", step_flops},
                    {"days_at_mfu", mdays}, {"days_at_hfu", hdays}});
        mx_json.push_back(row);
        if (p == m.precision && rc == m.recompute) {
          att_json.push_back({{"attention", attention_name(att)}, {"per_sample_bytes", vr.lin.per_sample},
                              {"fixed_bytes", vr.lin.fixed}, {"max_batch", vr.max_batch}, {"step_flops", step_flops},
                              {"counted_days", hdays}});
        }
      }
  }
  out(text, "\n## Precision × attention × recompute (as implemented, each its own replay; batch size {}; the config's "
            "rows in bold)\n\n{}",
      b, mx.markdown());
  out(text, "executed / model: the FLOPs the step runs (forward + backward + recompute; flash: causal rows and its "
            "backward's score recompute) over the model's forward + backward (causal attention, no recompute). "
            "Days: the {} training tokens at {:.0f}% of the GPU's peak for its precision (tf32 with --precision tf32), "
            "AdamW included — MFU counts model FLOPs, HFU executed ones.\n",
      sci(static_cast<double>(o.train_steps) * o.train_batch * t), o.mfu * 100);
  j["matrix"] = mx_json;
  j["attention"] = att_json;

  // ---- textbook vs implemented, tensor by tensor
  Table at;
  at.header = {"textbook item", "textbook floats", "reckon keeps", "floats", "why"};
  at.right_align = {false, true, false, true, false};
  int64_t sum_t = 0, sum_i = 0;
  for (const ActivationRow& r : activation_comparison(m)) {
    at.add({r.item, fmt_int(r.textbook_floats), r.implemented, fmt_int(r.implemented_floats), r.why});
    sum_t += r.textbook_floats;
    sum_i += r.implemented_floats;
  }
  at.add({"**total**", fmt_int(sum_t), "", fmt_int(sum_i), fmt::format("{:+.1f}% vs textbook", 100.0 * (sum_i - sum_t) / sum_t)});
  out(text, "\n## Activations: textbook vs implemented (batch size {})\n\n{}", b, at.markdown());

  // ---- FLOPs
  const StepFlops sf = estimate_step_flops(m, config.optim);
  const int64_t tokens = b * t;
  Table ft;
  ft.header = {"FLOPs per step", "FLOPs", "per token", "convention"};
  ft.right_align = {false, true, true, false};
  const Variant& own = variant(m.precision, m.grad_dtype, m.attention, m.recompute);
  ft.add({"forward", sci(sf.forward), sci(static_cast<double>(sf.forward) / tokens),
          m.attention == AttentionKind::flash
              ? "matmul 2·M·N·K; flash attention over the causal T(T+1)/2 entries; elementwise as executed"
              : "matmul 2·M·N·K; attention over the full T×T (what oneDNN computes); elementwise as executed"});
  ft.add({"backward", sci(sf.backward), sci(static_cast<double>(sf.backward) / tokens),
          fmt::format("backward / forward = {:.3f} (counted, not assumed){}", static_cast<double>(sf.backward) / sf.forward,
                      m.attention == AttentionKind::flash ? "; flash recomputes its scores here" : "")});
  if (sf.recompute > 0) {
    ft.add({"recompute", sci(sf.recompute), sci(static_cast<double>(sf.recompute) / tokens),
            fmt::format("recompute = {}: forward work re-run in backward", recompute_name(m.recompute))});
  }
  ft.add({"AdamW", sci(sf.optimizer), sci(static_cast<double>(sf.optimizer) / tokens),
          fmt::format("{} FLOPs per parameter as the kernel executes them", adamw_flops_per_element(config.optim))});
  ft.add({"**step**", sci(sf.total()), sci(static_cast<double>(sf.total()) / tokens), ""});
  if (own.overflow.empty()) {
    // From the exact fits (the naive reference of a flash config can pass int64 at this batch size).
    const double causal = own.flops.model_causal.at(b), full = own.flops.model_full.at(b), hw = own.flops.hardware.at(b);
    ft.add({"model FLOPs, causal attention", sci(causal), sci(causal / tokens),
            "MFU's numerator: forward + backward, no recompute, Q·Kᵀ and P·V over the T(T+1)/2 causal entries"});
    ft.add({"model FLOPs, full T×T", sci(full), sci(full / tokens),
            "the same over all T×T entries (PaLM's and Megatron-LM's formulas count so)"});
    ft.add({"executed (hardware) FLOPs", sci(hw), sci(hw / tokens),
            fmt::format("HFU's numerator: forward + backward + recompute as run = {:.3f} × model (causal)", hw / causal)});
  } else {
    ft.add({"model FLOPs", "does not fit int64", "", own.overflow});
  }
  ft.add({"6·N·tokens rule", sci(6.0 * n * tokens), sci(6.0 * n), "Kaplan: ignores attention and elementwise work"});
  out(text, "\n## FLOPs (batch size {}, {} tokens)\n\n{}", b, tokens, ft.markdown());
  const OpCount adamw = layout.optimizer_bytes == 12
                            ? adamw_master_count(1, config.optim, m.dtypes().grad)
                            : adamw_count(1, config.optim);
  const int64_t adamw_bytes_per_param = adamw.bytes_read + adamw.bytes_written;
  out(text, "AdamW per step: {} FLOPs and {} bytes moved ({} B per parameter: {})\n",
      fmt_int(adamw_flops_per_element(config.optim) * n), fmt_int((CheckedInt(adamw_bytes_per_param) * n).value()),
      adamw_bytes_per_param,
      layout.optimizer_bytes == 12 ? "read g, master, m, v; write master, m, v and the bf16 parameter"
                                   : "read p, g, m, v; write p, m, v");
  j["flops"] = {{"forward", sf.forward}, {"backward", sf.backward}, {"recompute", sf.recompute},
                {"optimizer", sf.optimizer}, {"step", sf.total()},
                {"model_causal", own.overflow.empty() ? at_batch(own.flops.model_causal, {}, b) : nlohmann::json()},
                {"model_full", own.overflow.empty() ? at_batch(own.flops.model_full, {}, b) : nlohmann::json()},
                {"hardware", sf.forward + sf.backward + sf.recompute},
                {"six_n_per_step", 6.0 * n * tokens}, {"adamw_flops", adamw_flops_per_element(config.optim) * n},
                {"adamw_bytes", (CheckedInt(adamw_bytes_per_param) * n).value()}};

  // ---- training time
  // A training batch of millions of sequences has a step count beyond int64: step FLOPs are exactly linear in
  // the batch size, so the step at the training batch is per_sample·B + fixed in double.
  const double train_step_flops = step_flops_linear_in_batch(m, config.optim).at(o.train_batch);
  const TrainingTime tt = training_time(train_step_flops, n, o.train_steps, o.train_batch, t, peak, o.mfu);
  Table tt_table;
  tt_table.header = {"training time", "total FLOPs", "days", "convention"};
  tt_table.right_align = {false, true, true, false};
  tt_table.add({fmt::format("executed, at HFU {:.0f}%", o.mfu * 100), sci(tt.counted_flops),
                fmt::format("{:.1f}", tt.counted_days),
                "forward + backward + recompute + AdamW as counted per op (this config's implementation)"});
  nlohmann::json model_days;
  if (own.overflow.empty()) {
    const TrainingTime tm = training_time(model_step(own), n, o.train_steps, o.train_batch, t, peak, o.mfu);
    const TrainingTime tf = training_time(own.flops.model_full.at(o.train_batch) + own.flops.optimizer.at(o.train_batch),
                                          n, o.train_steps, o.train_batch, t, peak, o.mfu);
    tt_table.add({fmt::format("model, causal, at MFU {:.0f}%", o.mfu * 100), sci(tm.counted_flops),
                  fmt::format("{:.1f}", tm.counted_days), "model FLOPs (causal attention) + AdamW"});
    tt_table.add({fmt::format("model, full T×T, at MFU {:.0f}%", o.mfu * 100), sci(tf.counted_flops),
                  fmt::format("{:.1f}", tf.counted_days), "model FLOPs in the full T×T convention + AdamW"});
    model_days = {{"days_at_mfu", tm.counted_days}, {"days_at_mfu_full_convention", tf.counted_days},
                  {"model_flops_causal", tm.counted_flops}, {"model_flops_full", tf.counted_flops},
                  {"hfu_needed_at_mfu", o.mfu * tt.counted_flops / tm.counted_flops}};
  }
  tt_table.add({"6·N rule", sci(tt.six_n_flops), fmt::format("{:.1f}", tt.six_n_days), "6 × parameters × tokens"});
  out(text, "\n## Training time: {} steps × batch {} × T {} = {} tokens on {} at {} ({:.1f} TFLOP/s), {:.0f}% utilization\n\n{}",
             o.train_steps, o.train_batch, t, sci(tt.tokens), gpu.description, gpu_math, peak / 1e12, o.mfu * 100,
             tt_table.markdown());
  if (own.overflow.empty()) {
    out(text, "the same run at MFU {:.0f}% needs HFU {:.1f}% (executed / model FLOPs = {:.3f})\n", o.mfu * 100,
        100 * model_days["hfu_needed_at_mfu"].get<double>(), model_days["hfu_needed_at_mfu"].get<double>() / o.mfu);
  }
  Table gp;
  gp.header = {"GPU", "FP32 TFLOP/s", "TF32", "BF16", "HBM TB/s", "memory", "days at this HFU (fp32 / tf32 / bf16)"};
  gp.right_align = {false, true, true, true, true, true, false};
  for (const GpuSpec& g : gpu_specs()) {
    auto days = [&](const char* p) {
      return training_time(train_step_flops, n, o.train_steps, o.train_batch, t, gpu_peak_flops(g, p), o.mfu).counted_days;
    };
    gp.add({g.description, fmt::format("{}", g.fp32_tflops), fmt::format("{}", g.tf32_tflops), fmt::format("{}", g.bf16_tflops),
            fmt::format("{}", g.hbm_tbps), fmt::format("{} GiB", g.memory_bytes >> 30),
            fmt::format("{:.0f} / {:.0f} / {:.0f}", days("fp32"), days("tf32"), days("bf16"))});
  }
  out(text, "\n{}", gp.markdown());
  j["training"] = {{"gpu", gpu.name}, {"precision", precision_name(m.precision)}, {"gpu_math", gpu_math}, {"mfu", o.mfu}, {"tokens", tt.tokens},
                   {"counted_flops", tt.counted_flops}, {"six_n_flops", tt.six_n_flops}, {"counted_days", tt.counted_days},
                   {"six_n_days", tt.six_n_days}, {"days_at_hfu", tt.counted_days}};
  if (!model_days.is_null()) j["training"].update(model_days);
  if (o.cluster.gpus_given) {
    const ClusterReport cluster = cluster_report(config, gpu, peak, o.mfu, budget, o.memory_budget, o.train_steps,
                                                 o.train_batch, o.cluster);
    text += cluster.text;
    j["cluster"] = cluster.json;
  }
  return EstimateReport{std::move(text), j.dump(2) + "\n"};
}

int run_estimate(const EstimateOptions& o) {
  const EstimateReport report = make_estimate_report(o);
  if (!o.json_path.empty()) write_output_file("--json", o.json_path, report.json);
  fmt::print("{}", report.text);
  if (!o.json_path.empty()) fmt::print("\nwrote {}\n", o.json_path);
  return 0;
}

}  // namespace reckon
