#include "cli/config_source.h"
#include "cli/extrapolate.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/memory_guard.h"
#include "cli/output.h"
#include "cli/table.h"
#include "cli/validate.h"
#include "runtime/check.h"
#include "estimators/fit.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "estimators/gpu_step.h"
#include "estimators/time.h"
#include "model/data.h"
#include "optim/step.h"
#include "runtime/machine.h"

namespace reckon {

namespace {

struct Measured {
  double median_step_seconds;
  bool exact;                       // counters and peak equal the estimate
  std::map<OpKey, OpCount> counts;  // one measured step
};

Measured measure_preset(const TrainConfig& config, int64_t steps) {
  Measured out{};
  const StepMeasurement check = measure_steady_step(config);
  const MemoryEstimate mem = estimate_step_memory(config.model);
  const auto expected = estimate_step_counts(config.model, config.optim);
  out.exact = check.memory.total.allocated_bytes.peak == mem.peak_total && check.counts.size() == expected.size();
  for (const auto& [k, e] : expected) {
    const auto it = check.counts.find(k);
    out.exact = out.exact && it != check.counts.end() && it->second.flops() == e.flops() &&
                it->second.bytes_read == e.bytes_read && it->second.bytes_written == e.bytes_written;
  }
  out.counts = check.counts;
  // Timing: a fresh model, kWarmUpSteps warm-up steps, then `steps` timed steps.
  TrainingSession run(config);
  TokenData data = TokenData::random(config.model.vocab_size, 3);
  data.fill_batch(run.tokens, run.targets, 0);
  run.warm_up();
  std::vector<double> times;
  for (int64_t s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    run.step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  out.median_step_seconds = times[times.size() / 2];
  return out;
}

// A shape as users read it: batch x M x K x N, with the transposed operands marked.
std::string shape_label(const MatmulGeometry& g) {
  const int r = g.rank;
  const bool at = g.a_strides[r - 2] == 1 && g.a_dims[r - 2] > 1, bt = g.b_strides[r - 2] == 1 && g.b_dims[r - 2] > 1;
  std::string s = g.batch() > 1 ? fmt::format("{}x", g.batch()) : "";
  s += fmt::format("{}x{}x{}", g.m(), g.k(), g.n());
  if (at) s += " Aᵀ";
  if (bt) s += " Bᵀ";
  if (g.alpha != 1.0f) s += " α";
  if (g.accumulate) s += " +=";
  return s;
}

// Every matmul geometry of the step timed alone (median of `reps` calls): seconds per op × phase.
struct StepMatmulTimes {
  std::map<OpKey, double> seconds;
  double total_seconds = 0, total_flops = 0;
  nlohmann::json shapes = nlohmann::json::array();
};

StepMatmulTimes time_step_matmuls(const ModelConfig& config, int reps) {
  StepMatmulTimes out;
  for (const StepMatmul& m : step_matmuls(config)) {
    const double per_call = measure_matmul_seconds(m.geometry, reps);
    const double s = per_call * static_cast<double>(m.calls);
    const double flops = static_cast<double>(matmul_flops(m.geometry) * m.calls);
    out.seconds[m.key] += s;
    out.total_seconds += s;
    out.total_flops += flops;
    out.shapes.push_back({{"op", m.key.op},
                          {"phase", phase_name(m.key.phase)},
                          {"shape", shape_label(m.geometry)},
                          {"calls", m.calls},
                          {"seconds_per_call", per_call},
                          {"gflops", flops / s * 1e-9}});
  }
  tracker().empty_cache();
  return out;
}

// The presets measured here and the target, checked whole before anything runs.
struct ExtrapolatePlan {
  std::vector<TrainConfig> presets;
  TrainConfig target;
  const GpuSpec* gpu = nullptr;
  std::string gpu_math;
  double gpu_peak = 0;
};

ExtrapolatePlan plan_extrapolate(const ExtrapolateOptions& o) {
  check_range("--steps", o.steps, 1, 1000);
  check_range("--target-batch", o.target_batch, 1, kMaxEstimateBatch);  // = the config's batch_size range
  check_range("--train-steps", o.train_steps, 1, kMaxTrainSteps);
  check_range("--train-batch", o.train_batch, 1, kMaxTrainBatch);
  ExtrapolatePlan p;
  p.gpu = &gpu_spec(o.gpu);
  const std::string precision_value = config_precision(o.precision);
  for (const std::string& name : o.validate) {
    p.presets.push_back(preset_config(name));
    for (const std::string& kv : o.overrides) apply_override(p.presets.back(), kv);
    apply_override(p.presets.back(), "precision=" + precision_value);
  }
  p.target = o.target_hf_config.empty() ? preset_config(o.target) : starting_config("", "", o.target_hf_config);
  for (const std::string& kv : o.overrides) apply_override(p.target, kv);
  apply_override(p.target, "precision=" + precision_value);
  p.gpu_math = o.precision == "tf32" ? "tf32" : gpu_math_for(p.target.model.precision);
  p.gpu_peak = gpu_peak_flops(*p.gpu, p.gpu_math);
  p.target.model.batch_size = o.target_batch;
  validate(p.target);
  check_token_count(o.train_steps, o.train_batch, p.target.model.context_length);
  check_counts_fit(p.target.model, p.target.optim);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);
  const int64_t budget = memory_budget(o.max_memory);
  for (const TrainConfig& c : p.presets) {
    validate(c);
    check_step_fits("extrapolate --validate " + c.preset, c.model, c.optim, budget);
  }
  return p;
}

// One measured preset against the model: every figure of its table row and its JSON, computed once.
struct ValidationRow {
  const TrainConfig* config;
  Measured measured;
  StepMatmulTimes matmuls;
  UtilizationFlops flops;
  int64_t step_flops = 0;
  double predicted = 0, one_rate = 0, error = 0, error_one_rate = 0, memory_bound = 0, mfu = 0, hfu = 0;
};

ValidationRow validate_preset(const TrainConfig& c, int64_t steps, const Roofline& cpu) {
  ValidationRow v{&c, measure_preset(c, steps), time_step_matmuls(c.model, 9), utilization_flops(c.model, c.optim)};
  const auto counts = estimate_step_counts(c.model, c.optim);
  const auto rows = roofline_step(counts, cpu, &v.matmuls.seconds);
  const double measured = v.measured.median_step_seconds;
  v.step_flops = estimate_step_flops(c.model, c.optim).total();
  v.predicted = roofline_total(rows);
  v.one_rate = roofline_total(roofline_step(counts, cpu));
  v.error = (v.predicted - measured) / measured;
  v.error_one_rate = (v.one_rate - measured) / measured;
  for (const RooflineRow& r : rows) v.memory_bound += r.memory_bound ? r.seconds : 0;
  v.mfu = v.flops.model_causal / measured / cpu.matmul_flops;
  v.hfu = v.flops.hardware / measured / cpu.matmul_flops;
  return v;
}

void add_row(Table& t, const ValidationRow& v) {
  t.add({v.config->preset, v.measured.exact ? "yes (0 B, 0 FLOP diff)" : "NO",
         fmt::format("{:.3e}", static_cast<double>(v.step_flops)),
         fmt::format("{:.3f} ({:.0f} GFLOP/s)", v.matmuls.total_seconds,
                     v.matmuls.total_flops / v.matmuls.total_seconds * 1e-9),
         fmt::format("{:.3f}", v.predicted), fmt::format("{:.3f}", v.measured.median_step_seconds),
         fmt::format("{:+.1f}%", 100 * v.error), fmt::format("{:+.1f}%", 100 * v.error_one_rate),
         fmt::format("{:.1f}%", 100 * v.memory_bound / v.predicted),
         fmt::format("{:.1f}% / {:.1f}%", 100 * v.mfu, 100 * v.hfu)});
}

nlohmann::json row_json(const ValidationRow& v) {
  return {{"preset", v.config->preset},
          {"counts_exact", v.measured.exact},
          {"predicted_s", v.predicted},
          {"measured_s", v.measured.median_step_seconds},
          {"error", v.error},
          {"predicted_one_matmul_rate_s", v.one_rate},
          {"error_one_matmul_rate", v.error_one_rate},
          {"matmul_floor_s", v.matmuls.total_seconds},
          {"matmul_shapes", v.matmuls.shapes},
          {"model_flops_causal", v.flops.model_causal},
          {"model_flops_full", v.flops.model_full},
          {"hardware_flops", v.flops.hardware},
          {"mfu_of_matmul_probe", v.mfu},
          {"hfu_of_matmul_probe", v.hfu}};
}

// The same model on the target GPU: matmuls at the tensor-core peak of the precision, elementwise at the FP32
// peak, bytes at HBM bandwidth. A roofline is a lower bound on time: no launch, no overlap losses.
nlohmann::json print_target(const ExtrapolatePlan& p, const ExtrapolateOptions& o) {
  const TrainConfig& target = p.target;
  const GpuSpec& gpu = *p.gpu;
  const double gpu_peak = p.gpu_peak;
  const Roofline g{gpu.name, gpu_peak, gpu.fp32_tflops * 1e12, gpu.hbm_tbps * 1e12};
  const auto rows = roofline_step(estimate_step_counts(target.model, target.optim), g);
  const double step_s = roofline_total(rows);
  double mem_s = 0;
  for (const RooflineRow& r : rows) mem_s += r.memory_bound ? r.seconds : 0;
  const double steps_per_train_step =  // a target step holds target_batch × gradient_accumulation_steps sequences
      static_cast<double>(o.train_batch) / static_cast<double>(o.target_batch * target.model.micro_batches());
  const double days = step_s * steps_per_train_step * o.train_steps / 86400.0;
  const StepFlops sf = estimate_step_flops(target.model, target.optim);
  const double achieved = static_cast<double>(sf.total()) / step_s;
  fmt::print("\n## Target: {} (batch {}, precision {}) on {} at {}\n\n", p.target.preset, o.target_batch,
             precision_name(target.model.precision), gpu.description, p.gpu_math);
  fmt::print(
      "roofline step: {:.4f} s for {:.3e} FLOPs ({:.0f}% of the step memory-bound) -> {:.1f} TFLOP/s = {:.1f}% of "
      "the {} peak\n",
      step_s, static_cast<double>(sf.total()), 100 * mem_s / step_s, achieved / 1e12, 100 * achieved / gpu_peak,
      p.gpu_math);
  const UtilizationFlops tu = utilization_flops(target.model, target.optim);
  const double target_mfu = tu.model_causal / step_s / gpu_peak, target_hfu = tu.hardware / step_s / gpu_peak;
  fmt::print(
      "at the roofline: MFU {:.1f}% (model FLOPs, causal attention; {:.1f}% in the full T×T convention), HFU "
      "{:.1f}% (executed, attention {}, recompute {})\n",
      100 * target_mfu, 100 * tu.model_full / step_s / gpu_peak, 100 * target_hfu,
      attention_name(target.model.attention), recompute_name(target.model.recompute));
  fmt::print(
      "training {} steps x batch {} (= {:.0f} roofline steps of batch {}): {:.1f} days at the roofline; the "
      "CPU validation above says how far real steps sit from it\n",
      o.train_steps, o.train_batch, steps_per_train_step * o.train_steps, o.target_batch, days);
  // The step predicted op by op (estimators/gpu_step.h): kernel-level constants, one GPU.
  const GpuStep predicted = predict_gpu_step(target.model, target.optim, gpu, 1, gpu_link(gpu, 1, "auto"), p.gpu_math);
  const double predicted_days = predicted.seconds * steps_per_train_step * o.train_steps / 86400.0;
  fmt::print(
      "predicted step (op by op, as `reckon estimate` prints it): {:.4f} s, {:.0f} tokens/s, MFU {:.1f}%, HFU "
      "{:.1f}%: {:.1f} days — {:.2f}× the roofline\n",
      predicted.seconds, predicted.tokens_per_second_per_gpu, 100 * predicted.mfu_causal, 100 * predicted.hfu,
      predicted_days, predicted.seconds / step_s);
  return {{"preset", p.target.preset},
          {"batch", o.target_batch},
          {"gpu_step",
           {{"seconds", predicted.seconds},
            {"tokens_per_second_per_gpu", predicted.tokens_per_second_per_gpu},
            {"mfu", predicted.mfu_causal},
            {"hfu", predicted.hfu},
            {"days", predicted_days}}},
          {"gpu", gpu.name},
          {"gpu_math", p.gpu_math},
          {"attention", attention_name(target.model.attention)},
          {"recompute", recompute_name(target.model.recompute)},
          {"step_seconds", step_s},
          {"memory_bound_seconds", mem_s},
          {"days", days},
          {"model_flops_causal", tu.model_causal},
          {"model_flops_full", tu.model_full},
          {"hardware_flops", tu.hardware},
          {"mfu", target_mfu},
          {"hfu", target_hfu}};
}

}  // namespace

int run_extrapolate(const ExtrapolateOptions& o) {
  const ExtrapolatePlan p = plan_extrapolate(o);
  // This CPU's roofline, measured now.
  const DType operands = p.target.model.dtypes().act;
  const double mm = measure_matmul_gflops(0.5, operands), bw = measure_bandwidth_gbs(0.5),
               fma = measure_fma_peak_gflops(0.2);
  tracker().empty_cache();
  const Roofline cpu{"this CPU", mm * 1e9, fma * 1e9, bw * 1e9};
  fmt::print("precision {} (matmul operands {})\n", precision_name(p.target.model.precision), dtype_name(operands));
  fmt::print(
      "roofline of this CPU (measured now): matmul {:.0f} GFLOP/s (oneDNN, 2048x2048x512, {} operands), "
      "elementwise arithmetic {:.0f} GFLOP/s (FMA peak), memory {:.1f} GB/s (STREAM triad, 16 B/element)\n",
      mm, dtype_name(operands), fma, bw);
  fmt::print(
      "model: per op x phase, time = max(matmul time + other FLOPs / FMA peak, bytes / bandwidth), summed over "
      "the step; counts from estimators/flops (validated below). Matmul time: each of the step's matmul shapes "
      "(estimators/memory's replay) timed alone with oneDNN, median of 9 calls; 'one matmul rate' uses the "
      "2048x2048x512 probe for every shape instead\n");
  Table t;
  t.header = {"preset",
              "counts == measured",
              "step FLOPs",
              "step's matmuls timed alone (s)",
              "predicted (s)",
              "measured median (s)",
              "error",
              "error with one matmul rate",
              "memory-bound share",
              "measured MFU / HFU (of the matmul probe)"};
  t.right_align = {false, false, true, true, true, true, true, true, true, true};
  nlohmann::json j;
  j["cpu"] = {
      {"matmul_gflops", mm}, {"matmul_operands", dtype_name(operands)}, {"fma_gflops", fma}, {"bandwidth_gbs", bw}};
  j["precision"] = precision_name(p.target.model.precision);
  Progress progress("extrapolate: measuring presets", static_cast<int64_t>(p.presets.size()));
  for (const TrainConfig& c : p.presets) {
    progress.update(static_cast<int64_t>(&c - p.presets.data()));
    const ValidationRow v = validate_preset(c, o.steps, cpu);
    add_row(t, v);
    j["validation"].push_back(row_json(v));
  }
  progress.finish();
  fmt::print("\n## The model on this CPU vs measurement (target: within ±15%)\n\n{}", t.markdown());
  j["target"] = print_target(p, o);
  if (!o.json_path.empty()) {
    write_output_file("--json", o.json_path, json_text(j, 2));
    fmt::print("wrote {}\n", o.json_path);
  }
  return 0;
}

}  // namespace reckon
