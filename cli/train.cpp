#include "cli/config_source.h"
#include "cli/train.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/html_report.h"
#include "cli/memory_guard.h"
#include "cli/output.h"
#include "cli/report.h"
#include "cli/table.h"
#include "cli/validate.h"
#include "runtime/check.h"
#include "estimators/fit.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "model/config.h"
#include "model/data.h"
#include "model/transformer.h"
#include "model/hf_checkpoint.h"
#include "optim/checkpoint.h"
#include "optim/step.h"
#include "runtime/safetensors.h"
#include "runtime/allocator.h"
#include "runtime/clock.h"
#include "runtime/comm.h"
#include "runtime/counters.h"
#include "runtime/fingerprint.h"
#include "runtime/utf8.h"
#include "runtime/machine.h"

namespace reckon {

namespace {

TrainConfig resolve_config(const TrainOptions& o) {
  TrainConfig config = starting_config(o.preset, o.config_file, o.hf_config);
  for (const std::string& kv : o.overrides) apply_override(config, kv);
  validate(config);
  return config;
}

// --init-from: the file's weights into the fresh model (a reckon checkpoint by parameter name, else a Hugging Face
// state dict in this config's layout); the optimizer starts fresh.
void initialise_from(TrainingSession& run, const Safetensors& file, const std::string& path,
                     const TrainConfig& config) {
  if (is_reckon_checkpoint(file)) {
    restore_parameters(run.model, file, path);
    fmt::print("initialised: parameters from {} (a reckon checkpoint; its optimizer state and step left behind)\n",
               path);
    return;
  }
  const HfStateDict hf = hf_state_dict(config.model);
  std::vector<Tensor> values;
  for (const Parameter& q : run.model.parameters()) values.push_back(q.value);
  const HfLoadReport loaded = load_hf_tensors(file, path, hf, run.model.layout(), values);
  fmt::print("initialised: parameters from {} (Hugging Face state dict, {} layout, {} tensors{})\n", path,
             hf.architecture, hf.tensors.size(),
             loaded.ignored.empty()
                 ? ""
                 : fmt::format("; ignored, as transformers does: {}", fmt::join(loaded.ignored, ", ")));
}

// Under mpirun, after --resume or --init-from: every rank must start from the same weights and optimizer state (a
// rank given another file would train on its own weights, silently). Their fingerprint is compared across ranks.
void check_same_start_on_all_ranks(TrainingSession& run) {
  uint64_t h = fingerprint64(nullptr, 0);
  for (const Parameter& q : run.model.parameters())
    h = fingerprint64(q.value.raw_data(), static_cast<size_t>(q.value.numel() * dtype_bytes(q.value.dtype())), h);
  for (const auto& [name, t] : run.optimizer.state_tensors())
    h = fingerprint64(t.raw_data(), static_cast<size_t>(t.numel() * dtype_bytes(t.dtype())), h);
  check_same_on_all_ranks({fmt::format("a starting state (parameters, AdamW state, step {}) of fingerprint {}",
                                       run.optimizer.steps_taken(), fingerprint_hex(h))},
                          "--resume / --init-from", "give every rank the same checkpoint file");
}

struct StepLog {
  int64_t step;
  double loss, seconds;
};

// Everything that can be wrong with the input, checked before any model-sized allocation, and what the run is.
struct TrainPlan {
  TrainConfig config;  // the run's (batch_size: the global batch)
  TrainConfig local;   // what this rank runs (the whole batch without mpirun)
  std::optional<Safetensors> resume_file;
  CheckpointMeta resume;
  std::optional<Safetensors> init_file;  // --init-from's weights, copied in once the model exists
  std::string data_source;
  int64_t first_step = 1, last_step = 1, budget = 0, step_peak = 0;
  int ranks = 1, rank = 0;
  bool want_report = false;
  bool resume_path_given = false, init_from_given = false;
  // The global batch's tokens of one step: batch_size × gradient_accumulation_steps × context_length.
  int64_t tokens_per_step() const {
    const ModelConfig& m = config.model;
    return m.batch_size * m.micro_batches() * m.context_length;
  }
};

// Micro-batch k of step `step` (from 1; each trains on batch step − 1 of the data, resumed or not): rows
// k·B + rank·b … of the step's K·B global rows (B the global batch_size, b this rank's share), so K micro-batches
// see exactly the rows of one batch K times larger, and each rank its slice of each.
MicroBatchFill step_batches(const TrainPlan& p, TokenData& data, TrainingSession& run, int64_t step) {
  const int64_t global = p.config.model.batch_size, mine = p.local.model.batch_size;
  return [&p, &data, &run, step, global, mine](int64_t k) {
    data.fill_batch_rows(run.tokens, run.targets, step - 1, k * global + p.rank * mine,
                         global * p.config.model.micro_batches());
  };
}

// Every file a run writes, by flag: the one list the writability and the distinctness checks read.
std::vector<std::pair<std::string, std::string>> output_paths(const TrainOptions& o) {
  return {{"--json", o.json_path},     {"--trace", o.trace_path},
          {"--save", o.save_path},     {"--dump-grads", o.dump_grads_path},
          {"--report", o.report_path}, {"--plot-memory", o.plot_memory_path}};
}

void check_output_paths(const TrainOptions& o) {
  check_range("--steps", o.steps, 1, kMaxStepsPerRun);
  for (const auto& [flag, path] : output_paths(o)) {
    if (!path.empty()) check_output_path(flag, path);
  }
}

// --resume with --preset, --config or --set: the config is the checkpoint's; values repeating it are accepted,
// any that differ refused, each named with both values.
void check_config_matches_checkpoint(const TrainConfig& given, const TrainConfig& saved, const std::string& path) {
  const std::vector<std::string> mine = config_overrides(given), theirs = config_overrides(saved);
  std::vector<std::string> differing;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (mine[i] != theirs[i]) {
      differing.push_back(
          fmt::format("{} (the checkpoint has {})", mine[i], theirs[i].substr(theirs[i].find('=') + 1)));
    }
  }
  check_arg(differing.empty(),
            "--resume: the config comes from the checkpoint '{}', and --preset, --config and --set give {} other "
            "value(s): {}; drop them (a resumed run continues with its own config)",
            path, differing.size(), fmt::join(differing, ", "));
}

// Every file the run reads or writes, in one list: no output may name another output or an input, checked before
// any work. --save may replace the checkpoint --resume names: its tensors are read into the model before the first
// step and the new file replaces it atomically after the last.
void check_run_paths(const TrainOptions& o, const std::string& data_source) {
  std::vector<std::pair<std::string, std::string>> paths = {{"--config", o.config_file},
                                                            {"--hf-config", o.hf_config},
                                                            {"--resume", o.resume_path},
                                                            {"--init-from", o.init_from_path},
                                                            {"--data", data_source == "random" ? "" : data_source}};
  for (auto& output : output_paths(o)) paths.push_back(std::move(output));
  check_distinct_paths(paths, {"--resume", "--save"});
}

TrainPlan plan_run(const TrainOptions& o) {
  check_output_paths(o);
  TrainPlan p;
  p.resume_path_given = !o.resume_path.empty(), p.init_from_given = !o.init_from_path.empty();
  p.want_report = !o.report_path.empty() || !o.plot_memory_path.empty() || !o.json_path.empty();
  // Resuming: the config, the data source and the position in it come from the checkpoint.
  p.data_source = o.data;
  if (!o.resume_path.empty()) {
    p.resume_file = open_safetensors(o.resume_path);  // the header: tensors go straight into the model later
    p.resume = read_checkpoint_meta(*p.resume_file, o.resume_path);
    if (o.config_given) {  // --set alone is read against the checkpoint's config, not the default preset
      TrainConfig given = o.base_config_given ? resolve_config(o) : p.resume.config;
      if (!o.base_config_given) {
        for (const std::string& kv : o.overrides) apply_override(given, kv);
      }
      check_config_matches_checkpoint(given, p.resume.config, o.resume_path);
    }
    // The checkpoint keeps the path as UTF-8 (other bytes as \xHH): a path that is not UTF-8 is given again.
    check_arg(!o.data_given || escape_invalid_utf8(o.data) == p.resume.data,
              "--data: '{}' differs from the checkpoint's data '{}' (a resumed run continues on its data)",
              escape_invalid_utf8(o.data), p.resume.data);
    p.data_source = o.data_given ? o.data : p.resume.data;
  }
  TrainConfig& config = p.config;
  config = p.resume_file ? p.resume.config : resolve_config(o);
  check_arg(o.init_from_path.empty() || o.resume_path.empty(),
            "--init-from: starts a run from weights with this run's config; --resume continues a checkpoint with its "
            "own: give one of them");
  check_arg(o.save_format == "reckon" || !o.save_path.empty(), "--save-format: {} needs --save PATH", o.save_format);
  if (o.save_format == "hf") hf_state_dict(config.model);  // refuses, naming the field, a model with no HF layout
  check_run_paths(o, p.data_source);
  if (!o.init_from_path.empty()) {
    try {
      p.init_file = open_safetensors(o.init_from_path);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("--init-from: {}", e.what()));
    }
    if (!is_reckon_checkpoint(*p.init_file)) hf_state_dict(config.model);
  }
  if (o.zero_given) {  // --zero S is the config field zero_stage
    apply_override(config, fmt::format("zero_stage={}", o.zero_stage));
    validate(config);
  }
  // Data parallel under mpirun: batch_size is the global batch, split evenly across the ranks.
  check_same_config_on_all_ranks(config);
  p.ranks = comm_size(), p.rank = comm_rank();
  check_arg(config.model.batch_size % p.ranks == 0,
            "batch_size: {} is not divisible by the {} mpirun ranks (each rank "
            "trains batch_size / ranks rows)",
            config.model.batch_size, p.ranks);
  check_arg(config.model.zero_stage == 0 || comm_active(),
            "zero_stage: {} shards across the ranks of mpirun, and this process runs alone; start it as `mpirun -np N "
            "reckon train --zero {} …` (N ≥ 1), or use zero_stage = 0",
            config.model.zero_stage, config.model.zero_stage);
  check_arg(config.model.zero_stage == 0 || (o.save_path.empty() && o.resume_path.empty() && !p.init_file),
            "{}: checkpoints of a sharded optimizer (zero_stage ≥ 1) are not built yet; use zero_stage = 0",
            !o.save_path.empty()     ? "--save"
            : !o.resume_path.empty() ? "--resume"
                                     : "--init-from");
  // ZeRO-1 reduce-scatters the gradients too: each rank holds the mean of its own range only, the rest its own.
  check_arg(config.model.zero_stage == 0 || o.dump_grads_path.empty(),
            "--dump-grads: with zero_stage {} each rank holds the averaged gradients of only its shard (they are "
            "reduce-scattered); use zero_stage 0 (DDP all-reduces them all)",
            config.model.zero_stage);
  p.local = config;
  p.local.model.batch_size = config.model.batch_size / p.ranks;
  p.first_step = p.resume.steps + 1, p.last_step = p.resume.steps + o.steps;
  if (o.peak_gflops_given) check_range("--peak-gflops", o.peak_gflops, 1e-3, kMaxPeakGflops);
  // The estimate is exact for the steady-state step (reckon reconcile proves it): checked before allocating.
  p.budget = memory_budget(o.max_memory);
  p.step_peak = check_step_fits("train", p.local.model, config.optim, p.budget, p.ranks, p.rank);
  return p;
}

// What the steps measured, and the figures computed from it once (printed and written from the same values).
struct TrainResult {
  std::vector<StepLog> log;
  int64_t warm_up_steps = 0, measured_steps = 0;
  bool diverged = false;
  // The last step's slice of the allocator timeline and of the op events: the report's picture of one step.
  size_t last_step_first_event = 0, last_step_first_op = 0, last_step_end_event = 0;
  std::array<int64_t, kNumCategories> last_step_base{};
  double steady_seconds = 0, tokens_per_second = 0, step_seconds = 0;
  double peak_gflops = 0;  // the precision's peak, for utilization (MFU, HFU, fraction_of_peak)
  double fma_gflops = 0;   // float32's FMA peak (the roofline's elementwise roof)
  std::string peak_source;
  UtilizationFlops model_flops;
  int64_t executed_flops = 0;        // per step, as the counters measured them
  nlohmann::json memory;             // the training's memory (before any probe allocates)
  nlohmann::json largest;            // the 10 largest tensors live at the training's peak
  std::optional<Roofline> roofline;  // measured once, for --profile and the report
  double utilization(int64_t flops) const { return static_cast<double>(flops) / step_seconds / (peak_gflops * 1e9); }
};

void print_step_line(const TrainOptions& o, const TrainResult& r, int64_t last_step, int64_t tokens_per_step,
                     bool tty) {
  const StepLog& s = r.log.back();
  std::string line = fmt::format("step {:>5}/{} | loss {:.4f} | {:>9.1f} tok/s | {:>8.2f} ms", s.step, last_step,
                                 s.loss, tokens_per_step / s.seconds, s.seconds * 1e3);
  if (tty) {  // the ETA from the mean step so far (a terminal only: logs keep one plain line per step)
    double sum = 0;
    for (const StepLog& l : r.log) sum += l.seconds;
    line += fmt::format(" | ETA {:.0f} s  ",
                        sum / static_cast<double>(r.log.size()) * static_cast<double>(last_step - s.step));
    fmt::print("\r{}", line);
    std::fflush(stdout);
  } else {
    fmt::print("{}\n", line);
  }
}

// The steps; the warm-up steps (kWarmUpSteps, fewer in a short run) are left out of the counters and of tokens/s.
TrainResult run_steps(const TrainOptions& o, const TrainPlan& p, TrainingSession& run, TokenData& data,
                      Counters& counters) {
  TrainResult r;
  const ModelConfig& m = p.local.model;
  const bool tty = isatty(fileno(stdout)) != 0;
  const int64_t tokens_per_step = p.tokens_per_step();
  r.measured_steps = o.steps;
  r.warm_up_steps = std::min<int64_t>(kWarmUpSteps, o.steps - 1);  // 0: a 1-step run reports step 1
  for (int64_t step = p.first_step; step <= p.last_step; ++step) {
    if (step == p.last_step && p.want_report) {
      r.last_step_first_event = tracker().timeline().size();
      r.last_step_first_op = counters.events().size();
      const MemoryStats now = tracker().stats();
      for (Category c : all_categories()) r.last_step_base[static_cast<size_t>(c)] = now[c].allocated_bytes.current;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double loss = run.step(step_batches(p, data, run, step));
    if (!std::isfinite(loss)) {
      if (tty) fmt::print("\n");
      fmt::print(stderr, "reckon: error: loss is {} at step {}; stopping (no output files written). Try a lower lr.\n",
                 loss, step);
      r.diverged = true;
      return r;
    }
    r.log.push_back({step, loss, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
    if (!o.quiet) print_step_line(o, r, p.last_step, tokens_per_step, tty);
    if (step - p.first_step + 1 == r.warm_up_steps) {
      counters.reset();
      r.measured_steps = o.steps - r.warm_up_steps;
    }
  }
  if (tty && !o.quiet) fmt::print("\n");
  for (const StepLog& s : r.log) r.steady_seconds += s.step - p.first_step + 1 > r.warm_up_steps ? s.seconds : 0.0;
  r.tokens_per_second = tokens_per_step * r.measured_steps / r.steady_seconds;
  r.step_seconds = r.steady_seconds / r.measured_steps;
  // MFU and HFU (estimators/flops.h): model FLOPs from the config in both attention conventions, hardware FLOPs as
  // the counters measured them (forward + backward + recompute).
  r.model_flops = utilization_flops(m, p.config.optim);
  for (Phase ph : {Phase::forward, Phase::backward, Phase::recompute})
    r.executed_flops += counters.phase_total(ph).flops();
  r.executed_flops /= std::max<int64_t>(r.measured_steps, 1);
  r.memory = memory_json(tracker(), 10);
  r.last_step_end_event = tracker().timeline().size();
  r.largest = nlohmann::json::array();
  for (const LiveBlock& blk : tracker().live_at_peak()) {  // measured: the allocator's live set at its peak
    if (r.largest.size() == 10) break;
    r.largest.push_back(
        {{"name", blk.name}, {"category", category_name(blk.category)}, {"bytes", blk.allocated_bytes}});
  }
  return r;
}

void print_collectives(const Counters& counters, const TrainResult& r, int rank, int ranks) {
  for (const auto& [key, n] : counters.by_op()) {  // with NCCL-tests' bus bandwidth
    if (key.phase != Phase::communication || n.calls == 0) continue;
    // NCCL-tests' size: the buffer (all_reduce: in = out; all_gather: the gathered output).
    const double bytes =
        static_cast<double>(key.op == "all_gather" ? n.bytes_written : n.bytes_read) / static_cast<double>(n.calls);
    const double seconds = n.seconds / static_cast<double>(n.calls);
    fmt::print(
        "{}: {} calls over {} step(s), {} B in / {} B out per call on rank {}, {:.3f} ms per call: algbw "
        "{:.2f} GB/s, busbw {:.2f} GB/s ({} ranks)\n",
        key.op, n.calls, r.measured_steps, fmt_int(n.bytes_read / n.calls), fmt_int(n.bytes_written / n.calls), rank,
        seconds * 1e3, bytes / seconds * 1e-9, bus_bandwidth(key.op.c_str(), bytes, seconds, ranks) * 1e-9, ranks);
  }
}

void print_summary(const TrainOptions& o, const TrainPlan& p, const TrainResult& r, const Counters& counters) {
  const ModelConfig& m = p.local.model;
  fmt::print(
      "\nsteady state over {} step(s) after {} warm-up: {:.1f} tokens/s, {:.2f} ms/step; loss {:.4f} -> {:.4f}\n",
      r.measured_steps, r.warm_up_steps, r.tokens_per_second, r.step_seconds * 1e3, r.log.front().loss,
      r.log.back().loss);
  if (p.ranks > 1) print_collectives(counters, r, p.rank, p.ranks);
  const UtilizationFlops& uf = r.model_flops;
  fmt::print(
      "utilization of {:.0f} GFLOP/s: MFU {:.1f}% (model FLOPs {}, causal attention) / {:.1f}% (full T×T "
      "convention: {}); HFU {:.1f}% (executed: {} FLOPs per step{})\n",
      r.peak_gflops, 100 * r.utilization(uf.model_causal), fmt_int(uf.model_causal), 100 * r.utilization(uf.model_full),
      fmt_int(uf.model_full), 100 * r.utilization(r.executed_flops), fmt_int(r.executed_flops),
      m.recompute == Recompute::none ? "" : fmt::format(", recompute {} included", recompute_name(m.recompute)));
  fmt::print("\n## Memory at the peak, by category\n\n{}\n", memory_table(tracker().stats()));
  fmt::print("## The 10 largest tensors live at the peak\n\n{}\n", live_at_peak_table(tracker(), 10));
  fmt::print("## FLOPs and bytes per op x phase (sum over {} step(s))\n\n{}\n", r.measured_steps,
             counters_table(counters));
  fmt::print("## Per step\n\n{}", phase_totals_table(counters, r.measured_steps, r.peak_gflops));
}

// The HTML report's data (also `train --json`'s "report"): the last step's memory timeline, the estimate beside it,
// time and FLOPs per op with the analytic FLOPs, the roofline.
nlohmann::json report_json(const TrainOptions& o, const TrainPlan& p, const TrainResult& r, const Counters& counters,
                           const MemoryEstimate& estimate, const MachineInfo& machine) {
  const ModelConfig& m = p.local.model;
  nlohmann::json report;
  const std::vector<MemoryEvent> timeline = tracker().timeline();
  const std::vector<OpEvent>& op_events = counters.events();
  const size_t end = std::min(r.last_step_end_event, timeline.size());
  report["memory"] = memory_timeline_json(
      std::vector<MemoryEvent>(timeline.begin() + static_cast<std::ptrdiff_t>(std::min(r.last_step_first_event, end)),
                               timeline.begin() + static_cast<std::ptrdiff_t>(end)),
      r.last_step_base,
      std::vector<OpEvent>(
          op_events.begin() + static_cast<std::ptrdiff_t>(std::min(r.last_step_first_op, op_events.size())),
          op_events.end()));
  nlohmann::json predicted;
  for (Category c : all_categories()) predicted[category_name(c)] = estimate.peak_breakdown[static_cast<size_t>(c)];
  report["memory"]["predicted_peak"] = estimate.peak_total;
  report["memory"]["predicted_breakdown"] = predicted;
  report["memory"]["peak"]["largest"] = r.largest;
  report["title"] = fmt::format("reckon train: {} ({} steps{})", p.config.preset, o.steps,
                                p.resume.steps > 0 ? fmt::format(", resumed after step {}", p.resume.steps) : "");
  report["config"] = describe(m);
  report["machine"] = machine_summary(machine);
  report["ms_per_step"] = r.step_seconds * 1e3;
  report["tokens_per_second"] = r.tokens_per_second;
  nlohmann::json ops = nlohmann::json::array();
  const double per = 1.0 / static_cast<double>(std::max<int64_t>(r.measured_steps, 1));
  // Per step: the FLOP reconciliation column (this rank's step under mpirun).
  const auto analytic = estimate_step_counts(m, p.config.optim, p.ranks, p.rank);
  for (const auto& [key, n] : counters.by_op()) {
    const auto it = analytic.find(key);
    ops.push_back({{"op", key.op},
                   {"phase", phase_name(key.phase)},
                   {"ms", n.seconds * 1e3 * per},
                   {"gflop", n.flops() * 1e-9 * per},
                   {"gbytes", (n.bytes_read + n.bytes_written) * 1e-9 * per},
                   {"flops", n.flops() / std::max<int64_t>(r.measured_steps, 1)},
                   {"analytic_flops", it == analytic.end() ? 0 : it->second.flops()}});
  }
  report["ops"] = ops;
  report["roofline"] = {{"matmul_gflops", r.roofline->matmul_flops * 1e-9},
                        {"fma_gflops", r.fma_gflops},
                        {"bandwidth_gbs", r.roofline->bytes_per_second * 1e-9}};
  return report;
}

nlohmann::json run_json(const TrainPlan& p, const TrainResult& r, const Counters& counters,
                        const nlohmann::json& report, const MachineInfo& machine, const TokenData& data,
                        int64_t num_parameters) {
  const int64_t tokens_per_step = p.tokens_per_step();
  nlohmann::json j;
  j["report"] = report;
  j["machine"] = {{"summary", machine_summary(machine)},
                  {"threads", machine.threads},
                  {"onednn_version", machine.onednn_version},
                  {"onednn_isa", machine.onednn_isa},
                  {"cpu", machine.cpu_model}};
  j["config"] = config_json(p.config);
  j["data"] = data.description();
  j["num_parameters"] = num_parameters;
  j["steps"] = nlohmann::json::array();
  for (const StepLog& s : r.log) {
    j["steps"].push_back({{"step", s.step},
                          {"loss", s.loss},
                          {"seconds", s.seconds},
                          {"tokens_per_second", tokens_per_step / s.seconds}});
  }
  j["warm_up_steps"] = r.warm_up_steps;
  j["tokens_per_second_steady"] = r.tokens_per_second;
  const UtilizationFlops& uf = r.model_flops;
  j["utilization"] = {{"peak_gflops", r.peak_gflops},
                      {"peak_source", r.peak_source},
                      {"seconds_per_step", r.step_seconds},
                      {"model_flops_causal", uf.model_causal},
                      {"model_flops_full", uf.model_full},
                      {"hardware_flops", r.executed_flops},
                      {"mfu_causal", r.utilization(uf.model_causal)},
                      {"mfu_full", r.utilization(uf.model_full)},
                      {"hfu", r.utilization(r.executed_flops)}};
  j["memory"] = r.memory;
  j["counters"] = counters_json(counters, r.measured_steps, r.peak_gflops);
  return j;
}

// The rows this rank trained on in step `step`, its micro-batches one after another: int32 (K·b, T) tokens and
// targets, untracked (after the run: no statistic sees them). The gradients of the step are those of this batch.
std::pair<Tensor, Tensor> step_rows(const TrainPlan& p, TokenData& data, TrainingSession& run, int64_t step) {
  UntrackedScope untracked;
  const int64_t k_all = p.config.model.micro_batches(), b = run.tokens.size(0), t = run.tokens.size(1);
  Tensor tokens = Tensor::empty({k_all * b, t}, Category::activation, "batch.tokens", DType::i32);
  Tensor targets = Tensor::empty({k_all * b, t}, Category::activation, "batch.targets", DType::i32);
  const MicroBatchFill fill = step_batches(p, data, run, step);
  for (int64_t k = 0; k < k_all; ++k) {
    fill(k);
    std::memcpy(tokens.data_i32() + k * b * t, run.tokens.data_i32(), static_cast<size_t>(b * t) * sizeof(int32_t));
    std::memcpy(targets.data_i32() + k * b * t, run.targets.data_i32(), static_cast<size_t>(b * t) * sizeof(int32_t));
  }
  return {std::move(tokens), std::move(targets)};
}

// Every output rendered first, then written together: all of the files or none (cli/output.h write_output_files).
void write_outputs(const TrainOptions& o, const TrainPlan& p, const TrainResult& r, TrainingSession& run,
                   TokenData& data, const Counters& counters, const nlohmann::json& report,
                   const nlohmann::json& json) {
  std::vector<PendingOutput> outputs;
  std::vector<std::string> notes;
  const auto add = [&](const char* flag, const std::string& path, std::string content, std::string note) {
    if (path.empty()) return;
    outputs.push_back({flag, path, std::move(content)});
    notes.push_back(std::move(note));
  };
  add("--json", o.json_path, o.json_path.empty() ? "" : json_text(json, 2), "");
  add("--report", o.report_path, o.report_path.empty() ? "" : report_html(report), " (open it in a browser)");
  add("--plot-memory", o.plot_memory_path, o.plot_memory_path.empty() ? "" : memory_svg(report), "");
  if (!o.save_path.empty() && o.save_format == "hf") {
    add("--save", o.save_path, hf_checkpoint_bytes(run, p.config, p.last_step),
        fmt::format(" (Hugging Face state dict of {} after step {}; weights only)",
                    hf_state_dict(p.config.model).architecture, p.last_step));
  } else if (!o.save_path.empty()) {
    add("--save", o.save_path, checkpoint_bytes(run, p.config, p.last_step, p.data_source, data.identity()),
        fmt::format(" (checkpoint after step {})", p.last_step));
  }
  if (!o.dump_grads_path.empty()) {
    const auto [tokens, targets] = step_rows(p, data, run, p.last_step);
    add("--dump-grads", o.dump_grads_path,
        gradients_bytes(run.model, {{"batch.tokens", tokens}, {"batch.targets", targets}},
                        {{"step", std::to_string(p.last_step)},
                         {"loss", fmt::format("{:.17g}", r.log.back().loss)},
                         {"config", fmt::format("{}", fmt::join(config_overrides(p.config), "\n"))}}),
        fmt::format(" (gradients of step {})", p.last_step));
  }
  add("--trace", o.trace_path, o.trace_path.empty() ? "" : json_text(trace_json(counters, tracker()), -1),
      " (open in ui.perfetto.dev or chrome://tracing)");
  write_output_files(outputs);
  if (!outputs.empty()) fmt::print("\n");
  for (size_t i = 0; i < outputs.size(); ++i) fmt::print("wrote {}{}\n", outputs[i].path, notes[i]);
}

void print_data_parallel(const TrainPlan& p) {
  static const char* const kStages[] = {
      "DDP: gradients all-reduced in buckets of {} MiB",
      "ZeRO-1: gradients all-reduced in buckets of {} MiB, AdamW state sharded, parameters all-gathered after each "
      "step",
      "ZeRO-2: gradients reduce-scattered per layer into shards, AdamW state sharded, parameters all-gathered after "
      "each step",
      "ZeRO-3: parameters, gradients and AdamW state sharded; each layer's parameters all-gathered where used, its "
      "gradients reduce-scattered"};
  const ModelConfig& m = p.local.model;
  fmt::print("data parallel (--zero {}): {} ranks × batch {} = global batch {}{}; {}\n", m.zero_stage, p.ranks,
             m.batch_size, p.config.model.batch_size,
             m.micro_batches() == 1 ? ""
                                    : fmt::format(" a micro-batch, × {} micro-batches = {} rows a step",
                                                  m.micro_batches(), p.config.model.batch_size * m.micro_batches()),
             fmt::format(fmt::runtime(kStages[m.zero_stage]), m.bucket_cap_mb));
}

}  // namespace

int run_train(const TrainOptions& o) {
  TrainPlan p = plan_run(o);
  const ModelConfig& m = p.local.model;
  // The data file is held in memory beside the step, so it gets what the step leaves of the budget.
  TokenData data = p.data_source == "random"
                       ? TokenData::random(m.vocab_size, p.config.seed)
                       : TokenData::from_file(p.data_source, m.vocab_size, m.context_length, p.budget - p.step_peak);
  // A changed data file breaks a resumed run's continuity; ranks with other steps or data would diverge (or, with
  // fewer steps, leave the others waiting in a collective for ever).
  check_arg(p.resume.data_identity.empty() || p.resume.data_identity == data.identity(),
            "--resume: the data '{}' changed since the checkpoint was written (then {}, now {}); a resumed run "
            "continues on the same data",
            p.data_source, p.resume.data_identity, data.identity());
  // (The contents, not the path: ranks on other nodes may keep their copies elsewhere.)
  check_same_on_all_ranks({fmt::format("--steps {}", o.steps), fmt::format("--data of {}", data.identity())}, "train",
                          "start every rank with the same --steps and --data (the same file contents)");
  const MemoryEstimate estimate =
      estimate_step_memory(m, {.data_parallel_ranks = p.ranks, .data_parallel_rank = p.rank});
  const MachineInfo machine = machine_info();
  // The peak that MFU, HFU and fraction_of_peak divide by: the precision's. In the mixed modes the matmuls run in
  // bf16, so it is the measured bf16 matmul rate where that beats float32's FMA peak (AVX512-BF16, AMX).
  const double fma_gflops = measure_fma_peak_gflops(0.2);
  double peak_gflops = o.peak_gflops_given ? o.peak_gflops : fma_gflops;
  std::string peak_source = o.peak_gflops_given ? "--peak-gflops" : "measured FMA peak";
  if (!o.peak_gflops_given && m.dtypes().act == DType::bf16) {
    const double bf16_matmul = measure_matmul_gflops(0.3, DType::bf16);
    if (bf16_matmul > peak_gflops) peak_gflops = bf16_matmul, peak_source = "measured bf16 matmul, oneDNN";
  }
  fmt::print("config: {} | {}\n", p.config.preset, describe(m));
  fmt::print("data: {} | steps: {} | peak for MFU: {:.0f} GFLOP/s ({})\n", data.description(), o.steps, peak_gflops,
             peak_source);
  fmt::print("memory: estimated step peak {} B ({} MiB) within the budget of {} B ({} MiB)\n",
             fmt_int(estimate.peak_total), fmt_bytes_mib(estimate.peak_total), fmt_int(p.budget),
             fmt_bytes_mib(p.budget));

  Counters& counters = reckon::counters();
  counters.reset();
  counters.clear_events();
  counters.set_record_events(!o.trace_path.empty() || p.want_report);
  tracker().clear_timeline();
  TrainingSession run(p.local, p.ranks > 1);
  if (comm_active()) print_data_parallel(p);
  if (p.resume_file) {
    restore_checkpoint(run, *p.resume_file, p.resume, o.resume_path);
    p.resume_file.reset();  // its bytes are in the model and the optimizer now
    fmt::print("resumed: {} after step {} (AdamW step {}); steps {} to {}\n", o.resume_path, p.resume.steps,
               p.resume.optimizer_steps, p.first_step, p.last_step);
  }
  if (p.init_file) {
    initialise_from(run, *p.init_file, o.init_from_path, p.config);
    p.init_file.reset();
  }
  if (p.ranks > 1 && (p.resume_path_given || p.init_from_given)) check_same_start_on_all_ranks(run);
  fmt::print("parameters: {} ({} MiB float32)\n", fmt_int(run.model.num_parameters()),
             fmt_bytes_mib(4 * run.model.num_parameters()));

  TrainResult r = run_steps(o, p, run, data, counters);
  if (r.diverged) return kExitDiverged;
  r.peak_gflops = peak_gflops, r.fma_gflops = fma_gflops, r.peak_source = peak_source;
  print_summary(o, p, r, counters);
  if (o.profile || p.want_report) {  // measured once, after every figure of the training's memory was taken
    // The matmul probe runs with the precision's operand dtype (bf16 in the mixed modes).
    r.roofline = Roofline{"this CPU", measure_matmul_gflops(0.3, m.dtypes().act) * 1e9, fma_gflops * 1e9,
                          measure_bandwidth_gbs(0.3) * 1e9};
    tracker().empty_cache();
  }
  if (o.profile) {
    fmt::print("\n## Profile: where the step's time goes\n\n{}",
               profile_table(counters, r.measured_steps, *r.roofline));
  }
  const nlohmann::json report = p.want_report ? report_json(o, p, r, counters, estimate, machine) : nlohmann::json();
  if (p.rank != 0) return 0;  // rank 0 writes every file (the ranks' models are identical)
  const nlohmann::json json = o.json_path.empty()
                                  ? nlohmann::json()
                                  : run_json(p, r, counters, report, machine, data, run.model.num_parameters());
  write_outputs(o, p, r, run, data, counters, report, json);
  return 0;
}

}  // namespace reckon
