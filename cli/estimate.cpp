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
  const double peak = gpu_peak_flops(gpu, o.precision);
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

  out(text, "config: {} | {}\n", config.preset, describe(m));
  out(text, "conventions: float32 everywhere (4 B); AdamW keeps m and v (2 × 4 B per parameter); GB = 10⁹ B, "
             "GiB = 2³⁰ B; activations: {}\n",
             textbook ? "textbook (the problem statement's list, one output-sized tensor per item)"
                      : "as implemented by reckon (what its backward keeps; proven by `reckon reconcile`)");

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
  const int64_t fixed = 16 * n;  // parameters, gradients, m, v
  const int64_t a = textbook ? tb_act_per_sample : lin_impl.per_sample;
  const int64_t bconst = textbook ? fixed : lin_impl.fixed;
  Table mt;
  mt.header = {"memory at the peak", "bytes", "GB / GiB", "convention"};
  mt.right_align = {false, true, true, false};
  auto cat = [&](Category c) { return impl.peak_breakdown[static_cast<int>(c)]; };
  mt.add({"parameters", fmt_int(4 * n), gb(4 * n), "4 B per parameter"});
  mt.add({"gradients", fmt_int(4 * n), gb(4 * n), "one float32 per parameter"});
  mt.add({"optimizer state", fmt_int(8 * n), gb(8 * n), "AdamW m and v"});
  int64_t total = 0;
  if (textbook) {
    const int64_t act = (CheckedInt(tb_act_per_sample) * b).value();
    mt.add({"activations", fmt_int(act), gb(act), "textbook list (see the table below)"});
    total = 16 * n + act;
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
      out(text, "oneDNN's scratchpad on this CPU: not queried: {} (reckon's runtime cannot run this step here; the "
                "figures above are arithmetic and stand)\n",
          e.what());
      j["memory_scratchpad"] = {{"not_queried", e.what()}};
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
                 {"peak_breakdown", {{"parameter", 4 * n}, {"gradient", 4 * n}, {"optimizer_state", 8 * n},
                                     {"activation", textbook ? (CheckedInt(tb_act_per_sample) * b).value() : cat(Category::activation)},
                                     {"temporary", textbook ? 0 : cat(Category::temporary)}}}};

  // ---- "is it 16 or 18 bytes per parameter?": the parameter state in each layout reckon's runtime has
  Table ps;
  ps.header = {"parameter state", "value + grad + optimizer (B/param)", "bytes for this model", "GB", "who counts it so"};
  ps.right_align = {false, true, true, true, false};
  nlohmann::json ps_json = nlohmann::json::array();
  for (const ParameterStateLayout& layout : parameter_state_layouts()) {
    const int64_t bytes = (CheckedInt(layout.total()) * n).value();
    ps.add({layout.name, fmt::format("{} + {} + {} = {}", layout.value_bytes, layout.grad_bytes, layout.optimizer_bytes,
                                     layout.total()),
            fmt_int(bytes), fmt::format("{:.2f}", bytes / 1e9), layout.source});
    ps_json.push_back({{"layout", layout.name}, {"value_bytes_per_param", layout.value_bytes},
                       {"grad_bytes_per_param", layout.grad_bytes}, {"optimizer_bytes_per_param", layout.optimizer_bytes},
                       {"total_bytes", bytes}});
  }
  out(text, "\n## Parameter state by precision (measured layouts: tests/test_model.cpp MasterWeightsBytes)\n\n{}", ps.markdown());
  j["parameter_state"] = ps_json;

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
  out(text, "AdamW per step: {} FLOPs and {} bytes moved ({} B per parameter: read p, g, m, v; write p, m, v)\n",
             fmt_int(adamw_flops_per_element(config.optim) * n), fmt_int(28 * n), 28);
  j["flops"] = {{"forward", sf.forward}, {"backward", sf.backward}, {"optimizer", sf.optimizer}, {"step", sf.total()},
                {"six_n_per_step", 6.0 * n * tokens}, {"adamw_flops", adamw_flops_per_element(config.optim) * n},
                {"adamw_bytes", 28 * n}};

  // ---- training time
  // A training batch of millions of sequences has a step count beyond int64: step FLOPs are exactly linear in
  // the batch size, so the step at the training batch is per_sample·B + fixed in double.
  const LinearFlops step_flops = step_flops_linear_in_batch(m, config.optim);
  const double train_step_flops = step_flops.at(o.train_batch);
  const TrainingTime tt = training_time(train_step_flops, n, o.train_steps, o.train_batch, t, peak, o.mfu);
  Table tt_table;
  tt_table.header = {"training time", "total FLOPs", "days", "convention"};
  tt_table.right_align = {false, true, true, false};
  tt_table.add({"counted (reckon)", sci(tt.counted_flops), fmt::format("{:.1f}", tt.counted_days),
                "forward + backward + AdamW as counted per op"});
  tt_table.add({"6·N rule", sci(tt.six_n_flops), fmt::format("{:.1f}", tt.six_n_days), "6 × parameters × tokens"});
  out(text, "\n## Training time: {} steps × batch {} × T {} = {} tokens on {} at {} ({:.1f} TFLOP/s), MFU {:.0f}%\n\n{}",
             o.train_steps, o.train_batch, t, sci(tt.tokens), gpu.description, o.precision, peak / 1e12, o.mfu * 100,
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
  j["training"] = {{"gpu", gpu.name}, {"precision", o.precision}, {"mfu", o.mfu}, {"tokens", tt.tokens},
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
