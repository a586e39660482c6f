#include "cli/estimate.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/output.h"
#include "cli/table.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "estimators/textbook.h"
#include "estimators/time.h"
#include "model/config.h"
#include "optim/adamw.h"

namespace reckon {

namespace {
std::string gb(int64_t bytes) { return fmt::format("{:.2f} GB / {:.2f} GiB", bytes / 1e9, bytes / 1073741824.0); }
std::string sci(double x) { return fmt::format("{:.3e}", x); }
}  // namespace

int run_estimate(const EstimateOptions& o) {
  TrainConfig config = o.config_file.empty() ? preset_config(o.preset) : load_config_file(o.config_file);
  for (const std::string& kv : o.overrides) apply_override(config, kv);
  if (o.batch_size != 0) config.model.batch_size = o.batch_size;
  validate(config);
  if (o.activations != "implemented" && o.activations != "textbook") {
    throw std::invalid_argument(fmt::format("--activations: '{}' is not allowed; allowed values are implemented, textbook",
                                            o.activations));
  }
  if (!(o.mfu > 0.0 && o.mfu <= 1.0)) {
    throw std::invalid_argument(fmt::format("--mfu: {} is outside the allowed range (0, 1]", o.mfu));
  }
  if (o.train_steps < 1 || o.train_batch < 1 || o.train_batch > (1 << 24)) {
    throw std::invalid_argument(fmt::format(
        "--train-steps {} / --train-batch {}: allowed ranges are [1, 2^62] and [1, 16777216]", o.train_steps, o.train_batch));
  }
  const int64_t budget = parse_bytes("--memory-budget", o.memory_budget);
  const GpuSpec& gpu = gpu_spec(o.gpu);
  const double peak = gpu_peak_flops(gpu, o.precision);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);

  const ModelConfig& m = config.model;
  const bool textbook = o.activations == "textbook";
  const int64_t n = count_parameters(m);
  const int64_t v = m.vocab_size, d = m.d_model, f = m.d_ff, l = m.num_layers, b = m.batch_size, t = m.context_length;
  nlohmann::json j;
  j["config"] = {{"preset", config.preset}, {"description", describe(m)}};

  fmt::print("config: {} | {}\n", config.preset, describe(m));
  fmt::print("conventions: float32 everywhere (4 B); AdamW keeps m and v (2 × 4 B per parameter); GB = 10⁹ B, "
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
  fmt::print("\n## Parameters\n\n{}", pt.markdown());
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
    const int64_t act = tb_act_per_sample * b;
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
  fmt::print("\n## Peak memory of a training step with AdamW\n\n{}", mt.markdown());
  if (!textbook) {
    const MemoryEstimate with_sp = estimate_step_memory(m);
    fmt::print("plus oneDNN's scratchpad on this CPU (queried from its primitive descriptors, a known term of "
               "reckon's runtime, not of a GPU): {} B at the peak, {} B the largest.\n",
               fmt_int(with_sp.scratchpad_at_peak), fmt_int(with_sp.scratchpad_max));
  }

  const int64_t max_batch = a > 0 && budget > bconst ? (budget - bconst) / a : 0;
  fmt::print("\nmemory(B) = a·B + b with a = {} B per sample ({}), b = {} B ({}){}\n", fmt_int(a), gb(a), fmt_int(bconst),
             gb(bconst), textbook ? "" : (lin_impl.exact ? fmt::format(", exact at B = {}", fmt::join(lin_impl.batches_checked, ", "))
                                               : std::string(", not exactly linear")));
  fmt::print("max batch in {} = {} B ({}): {}\n", o.memory_budget, fmt_int(budget), gb(budget), max_batch);
  if (o.memory_budget.find("GB") != std::string::npos && o.memory_budget.find("GiB") == std::string::npos) {
    const std::string alt = o.memory_budget.substr(0, o.memory_budget.find("GB")) + "GiB";
    const int64_t budget2 = parse_bytes("--memory-budget", alt);
    fmt::print("  (in {} = {} B: {})\n", alt, fmt_int(budget2), a > 0 && budget2 > bconst ? (budget2 - bconst) / a : 0);
  }
  j["memory"] = {{"activations_convention", o.activations}, {"peak_bytes", total}, {"per_sample_bytes", a},
                 {"fixed_bytes", bconst}, {"budget_bytes", budget}, {"max_batch", max_batch},
                 {"peak_breakdown", {{"parameter", 4 * n}, {"gradient", 4 * n}, {"optimizer_state", 8 * n},
                                     {"activation", textbook ? tb_act_per_sample * b : cat(Category::activation)},
                                     {"temporary", textbook ? 0 : cat(Category::temporary)}}}};

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
  fmt::print("\n## Activations: textbook vs implemented (batch size {})\n\n{}", b, at.markdown());

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
  fmt::print("\n## FLOPs (batch size {}, {} tokens)\n\n{}", b, tokens, ft.markdown());
  fmt::print("AdamW per step: {} FLOPs and {} bytes moved ({} B per parameter: read p, g, m, v; write p, m, v)\n",
             fmt_int(adamw_flops_per_element(config.optim) * n), fmt_int(28 * n), 28);
  j["flops"] = {{"forward", sf.forward}, {"backward", sf.backward}, {"optimizer", sf.optimizer}, {"step", sf.total()},
                {"six_n_per_step", 6.0 * n * tokens}, {"adamw_flops", adamw_flops_per_element(config.optim) * n},
                {"adamw_bytes", 28 * n}};

  // ---- training time
  ModelConfig train_m = m;
  train_m.batch_size = o.train_batch;
  const StepFlops train_sf = estimate_step_flops(train_m, config.optim);
  const TrainingTime tt = training_time(train_sf.total(), n, o.train_steps, o.train_batch, t, peak, o.mfu);
  Table tt_table;
  tt_table.header = {"training time", "total FLOPs", "days", "convention"};
  tt_table.right_align = {false, true, true, false};
  tt_table.add({"counted (reckon)", sci(tt.counted_flops), fmt::format("{:.1f}", tt.counted_days),
                "forward + backward + AdamW as counted per op"});
  tt_table.add({"6·N rule", sci(tt.six_n_flops), fmt::format("{:.1f}", tt.six_n_days), "6 × parameters × tokens"});
  fmt::print("\n## Training time: {} steps × batch {} × T {} = {} tokens on {} at {} ({:.1f} TFLOP/s), MFU {:.0f}%\n\n{}",
             o.train_steps, o.train_batch, t, sci(tt.tokens), gpu.description, o.precision, peak / 1e12, o.mfu * 100,
             tt_table.markdown());
  Table gp;
  gp.header = {"GPU", "FP32 TFLOP/s", "TF32", "BF16", "HBM TB/s", "memory", "days at this MFU (fp32 / tf32 / bf16)"};
  gp.right_align = {false, true, true, true, true, true, false};
  for (const GpuSpec& g : gpu_specs()) {
    auto days = [&](const char* p) {
      return training_time(train_sf.total(), n, o.train_steps, o.train_batch, t, gpu_peak_flops(g, p), o.mfu).counted_days;
    };
    gp.add({g.description, fmt::format("{}", g.fp32_tflops), fmt::format("{}", g.tf32_tflops), fmt::format("{}", g.bf16_tflops),
            fmt::format("{}", g.hbm_tbps), fmt::format("{} GiB", g.memory_bytes >> 30),
            fmt::format("{:.0f} / {:.0f} / {:.0f}", days("fp32"), days("tf32"), days("bf16"))});
  }
  fmt::print("\n{}", gp.markdown());
  j["training"] = {{"gpu", gpu.name}, {"precision", o.precision}, {"mfu", o.mfu}, {"tokens", tt.tokens},
                   {"counted_flops", tt.counted_flops}, {"six_n_flops", tt.six_n_flops}, {"counted_days", tt.counted_days},
                   {"six_n_days", tt.six_n_days}};
  if (!o.json_path.empty()) {
    write_file_atomically(o.json_path, j.dump(2) + "\n");
    fmt::print("\nwrote {}\n", o.json_path);
  }
  return 0;
}

}  // namespace reckon
