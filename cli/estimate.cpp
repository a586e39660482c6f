#include "cli/estimate.h"

#include <cmath>
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
  const int64_t n = count_parameters(m);
  const int64_t v = m.vocab_size, d = m.d_model, f = m.d_ff, l = m.num_layers, b = m.batch_size, t = m.context_length;
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
  const int64_t ffn_mats = m.ffn == FfnKind::swiglu ? 3 : 2;
  pt.add({"token embedding", fmt_int(v * d), "V·D"});
  if (m.position == Position::learned) pt.add({"position embedding", fmt_int(t * d), "T·D"});
  pt.add({"attention (all layers)", fmt_int(l * 4 * d * d), "L·4·D²"});
  pt.add({fmt::format("ffn ({}, all layers)", ffn_kind_name(m.ffn)), fmt_int(l * ffn_mats * d * f),
          fmt::format("L·{}·D·d_ff", ffn_mats)});
  pt.add({"RMSNorm gains", fmt_int(l * 2 * d + d), "L·2·D + D"});
  pt.add({"LM head", fmt_int(m.tie_embeddings ? 0 : v * d), m.tie_embeddings ? "tied to the embedding" : "V·D (untied)"});
  pt.add({"**total**", fmt_int(n), fmt::format("{:.3f} B parameters", n / 1e9)});
  out(text, "\n## Parameters\n\n{}", pt.markdown());
  j["num_parameters"] = n;

  // ---- memory
  MemoryEstimateOptions pure;
  pure.onednn_scratchpad = false;
  const MemoryEstimate impl = estimate_step_memory(m, pure);
  const LinearMemory lin_impl = memory_linear_in_batch(m, pure);
  const int64_t tb_act_per_sample = 4 * textbook_activation_floats(ModelConfig{m.vocab_size, t, l, d, m.num_heads, f,
                                                                               m.ffn, m.tie_embeddings, m.position, 1,
                                                                               m.rmsnorm_eps});
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

  // ---- "is it 16 or 18 bytes per parameter?", "why does AMP use more memory?": every precision side by side,
  // each from its own replay (as implemented) at this config, budget and training run.
  const LinearFlops step_flops = step_flops_linear_in_batch(m, config.optim);
  // The variants below differ from the config in one field; the config's own row reuses its fit (5 replays).
  auto memory_fit = [&](const ModelConfig& variant) {
    const bool same = variant.precision == m.precision && variant.grad_dtype == m.grad_dtype &&
                      variant.attention == m.attention;
    return same ? lin_impl : memory_linear_in_batch(variant, pure);
  };
  Table ps;
  ps.header = {"precision", "value + grad + optimizer (B/param)", "peak at B = " + std::to_string(b), "memory = a·B + b",
               "max batch in " + o.memory_budget, fmt::format("days on {} ({} peak)", gpu.name, "matching"),
               "who counts it so"};
  ps.right_align = {false, true, true, false, true, true, false};
  nlohmann::json ps_json = nlohmann::json::array();
  for (const ParameterStateLayout& pl : parameter_state_layouts()) {
    ModelConfig pm = m;
    pm.precision = pl.precision;
    pm.grad_dtype = pl.grad_dtype;
    const LinearMemory plin = memory_fit(pm);
    const int64_t ppeak = estimate_step_memory(pm, pure).peak_total;
    const int64_t pmax = max_batch_in_budget(pm, budget, pure, plin);
    const char* math = gpu_math_for(pl.precision);
    // FLOPs do not depend on the precision (only bytes do): the config's step FLOPs serve every row.
    const double pdays = training_time(step_flops.at(o.train_batch), n, o.train_steps, o.train_batch, t,
                                       gpu_peak_flops(gpu, math), o.mfu).counted_days;
    const std::string bpp = fmt::format("{} + {} + {} = {}{}", pl.value_bytes, pl.grad_bytes, pl.optimizer_bytes,
                                        pl.total(), pl.weight_cache_bytes ? " (+2 per matmul weight in the step)" : "");
    ps.add({pl.name, bpp, gb(ppeak), fmt::format("{}·B + {}", fmt_int(plin.per_sample), fmt_int(plin.fixed)),
            fmt_int(pmax), fmt::format("{:.1f} ({})", pdays, math), pl.source});
    ps_json.push_back({{"precision", pl.name}, {"value_bytes_per_param", pl.value_bytes},
                       {"grad_bytes_per_param", pl.grad_bytes}, {"optimizer_bytes_per_param", pl.optimizer_bytes},
                       {"weight_cache_bytes_per_matmul_param", pl.weight_cache_bytes},
                       {"parameter_state_bytes", (CheckedInt(pl.total()) * n).value()}, {"peak_bytes", ppeak},
                       {"per_sample_bytes", plin.per_sample}, {"fixed_bytes", plin.fixed}, {"max_batch", pmax},
                       {"gpu_math", math}, {"counted_days", pdays}});
  }
  out(text, "\n## Precisions side by side (as implemented: each its own replay; days at MFU {:.0f}%)\n\n{}", o.mfu * 100,
      ps.markdown());
  j["precisions"] = ps_json;

  // ---- naive vs flash attention at this precision (issue 12's matrix, first two rows): what keeping the
  // B·H·T² probabilities costs, and the FLOPs each executes (flash: causal rows only, scores recomputed in
  // backward).
  Table att;
  att.header = {"attention", "activations + temporaries per sample", "memory = a·B + b", "max batch in " + o.memory_budget,
                "step FLOPs (batch " + std::to_string(b) + ")", fmt::format("days on {} ({})", gpu.name, gpu_math)};
  att.right_align = {false, true, false, true, true, true};
  nlohmann::json att_json = nlohmann::json::array();
  for (AttentionKind kind : {AttentionKind::naive, AttentionKind::flash}) {
    ModelConfig am = m;
    am.attention = kind;
    const LinearMemory alin = memory_fit(am);
    const int64_t amax = max_batch_in_budget(am, budget, pure, alin);
    const LinearFlops aflops_fit = kind == m.attention ? step_flops : step_flops_linear_in_batch(am, config.optim);
    const int64_t aflops = estimate_step_flops(am, config.optim).total();
    const double adays = training_time(aflops_fit.at(o.train_batch), n, o.train_steps, o.train_batch, t, peak, o.mfu)
                             .counted_days;
    att.add({attention_name(kind), gb(alin.per_sample), fmt::format("{}·B + {}", fmt_int(alin.per_sample), fmt_int(alin.fixed)),
             fmt_int(amax), sci(static_cast<double>(aflops)), fmt::format("{:.1f}", adays)});
    att_json.push_back({{"attention", attention_name(kind)}, {"per_sample_bytes", alin.per_sample},
                        {"fixed_bytes", alin.fixed}, {"max_batch", amax}, {"step_flops", aflops}, {"counted_days", adays}});
  }
  out(text, "\n## Attention: naive vs flash (precision {}; as implemented, each its own replay)\n\n{}",
      precision_name(m.precision), att.markdown());
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
  ft.add({"forward", sci(sf.forward), sci(static_cast<double>(sf.forward) / tokens),
          "matmul 2·M·N·K; attention over the full T×T; elementwise as executed"});
  ft.add({"backward", sci(sf.backward), sci(static_cast<double>(sf.backward) / tokens),
          fmt::format("backward / forward = {:.3f} (counted, not assumed)", static_cast<double>(sf.backward) / sf.forward)});
  ft.add({"AdamW", sci(sf.optimizer), sci(static_cast<double>(sf.optimizer) / tokens),
          fmt::format("{} FLOPs per parameter as the kernel executes them", adamw_flops_per_element(config.optim))});
  ft.add({"**step**", sci(sf.total()), sci(static_cast<double>(sf.total()) / tokens), ""});
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
  j["flops"] = {{"forward", sf.forward}, {"backward", sf.backward}, {"optimizer", sf.optimizer}, {"step", sf.total()},
                {"six_n_per_step", 6.0 * n * tokens}, {"adamw_flops", adamw_flops_per_element(config.optim) * n},
                {"adamw_bytes", (CheckedInt(adamw_bytes_per_param) * n).value()}};

  // ---- training time
  // A training batch of millions of sequences has a step count beyond int64: step FLOPs are exactly linear in
  // the batch size, so the step at the training batch is per_sample·B + fixed in double.
  const double train_step_flops = step_flops.at(o.train_batch);
  const TrainingTime tt = training_time(train_step_flops, n, o.train_steps, o.train_batch, t, peak, o.mfu);
  Table tt_table;
  tt_table.header = {"training time", "total FLOPs", "days", "convention"};
  tt_table.right_align = {false, true, true, false};
  tt_table.add({"counted (reckon)", sci(tt.counted_flops), fmt::format("{:.1f}", tt.counted_days),
                "forward + backward + AdamW as counted per op"});
  tt_table.add({"6·N rule", sci(tt.six_n_flops), fmt::format("{:.1f}", tt.six_n_days), "6 × parameters × tokens"});
  out(text, "\n## Training time: {} steps × batch {} × T {} = {} tokens on {} at {} ({:.1f} TFLOP/s), MFU {:.0f}%\n\n{}",
             o.train_steps, o.train_batch, t, sci(tt.tokens), gpu.description, gpu_math, peak / 1e12, o.mfu * 100,
             tt_table.markdown());
  Table gp;
  gp.header = {"GPU", "FP32 TFLOP/s", "TF32", "BF16", "HBM TB/s", "memory", "days at this MFU (fp32 / tf32 / bf16)"};
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
                   {"six_n_days", tt.six_n_days}};
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
