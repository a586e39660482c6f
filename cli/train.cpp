#include "cli/train.h"

#include <unistd.h>

#include <chrono>
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
#include "optim/checkpoint.h"
#include "optim/step.h"
#include "runtime/safetensors.h"
#include "runtime/allocator.h"
#include "runtime/clock.h"
#include "runtime/comm.h"
#include "runtime/counters.h"
#include "runtime/machine.h"

namespace reckon {

namespace {

TrainConfig resolve_config(const TrainOptions& o) {
  TrainConfig config = o.config_file.empty() ? preset_config(o.preset) : load_config_file(o.config_file);
  for (const std::string& kv : o.overrides) apply_override(config, kv);
  validate(config);
  return config;
}

struct StepLog {
  int64_t step;
  double loss, seconds;
};

}  // namespace

int run_train(const TrainOptions& o) {
  // Everything that can be wrong with the input is checked before any model-sized allocation.
  check_range("--steps", o.steps, 1, 10000000);
  if (!o.json_path.empty()) check_output_path("--json", o.json_path);
  if (!o.trace_path.empty()) check_output_path("--trace", o.trace_path);
  if (!o.save_path.empty()) check_output_path("--save", o.save_path);
  if (!o.dump_grads_path.empty()) check_output_path("--dump-grads", o.dump_grads_path);
  if (!o.report_path.empty()) check_output_path("--report", o.report_path);
  if (!o.plot_memory_path.empty()) check_output_path("--plot-memory", o.plot_memory_path);
  const bool want_report = !o.report_path.empty() || !o.plot_memory_path.empty() || !o.json_path.empty();
  // Resuming: the config, the data source and the position in it come from the checkpoint.
  std::optional<Safetensors> resume_file;
  CheckpointMeta resume;
  std::string data_source = o.data;
  if (!o.resume_path.empty()) {
    check_arg(!o.config_given, "--resume: the config comes from the checkpoint '{}'; drop --preset, --config and --set",
              o.resume_path);
    resume_file = read_safetensors(o.resume_path, physical_memory_bytes());
    resume = read_checkpoint_meta(*resume_file, o.resume_path);
    check_arg(!o.data_given || o.data == resume.data,
              "--data: '{}' differs from the checkpoint's data '{}' (a resumed run continues on its data)", o.data,
              resume.data);
    data_source = resume.data;
  }
  TrainConfig config = resume_file ? resume.config : resolve_config(o);
  if (o.zero_given) {  // --zero S is the config field zero_stage
    apply_override(config, fmt::format("zero_stage={}", o.zero_stage));
    validate(config);
  }
  // Data parallel under mpirun: batch_size is the global batch, split evenly across the ranks.
  check_same_config_on_all_ranks(config);
  const int ranks = comm_size(), rank = comm_rank();
  check_arg(config.model.batch_size % ranks == 0, "batch_size: {} is not divisible by the {} mpirun ranks (each rank "
            "trains batch_size / ranks rows)", config.model.batch_size, ranks);
  check_arg(config.model.zero_stage == 0 || comm_active(),
            "zero_stage: {} shards across the ranks of mpirun, and this process runs alone; start it as `mpirun -np N "
            "reckon train --zero {} …` (N ≥ 1), or use zero_stage = 0", config.model.zero_stage, config.model.zero_stage);
  check_arg(config.model.zero_stage == 0 || (o.save_path.empty() && o.resume_path.empty()),
            "{}: checkpoints of a sharded optimizer (zero_stage ≥ 1) are not built yet; use zero_stage = 0",
            o.save_path.empty() ? "--resume" : "--save");
  check_arg(config.model.zero_stage < 2 || o.dump_grads_path.empty(),
            "--dump-grads: with zero_stage {} each rank holds only its shard of the gradients; use zero_stage 0 or 1",
            config.model.zero_stage);
  TrainConfig local = config;
  local.model.batch_size = config.model.batch_size / ranks;
  const int64_t first_step = resume.steps + 1, last_step = resume.steps + o.steps;
  // Outputs must not overwrite each other or an input (--save may replace the checkpoint it resumed: it was
  // read whole and is replaced atomically).
  check_distinct_paths({{"--config", o.config_file}, {"--data", data_source == "random" ? "" : data_source},
                        {"--json", o.json_path}, {"--trace", o.trace_path}, {"--save", o.save_path},
                        {"--dump-grads", o.dump_grads_path}, {"--report", o.report_path},
                        {"--plot-memory", o.plot_memory_path}});
  check_distinct_paths({{"--resume", o.resume_path}, {"--dump-grads", o.dump_grads_path}, {"--json", o.json_path},
                        {"--trace", o.trace_path}});
  const ModelConfig& m = local.model;  // what this rank runs (the whole batch without mpirun)
  if (o.peak_gflops != 0) check_range("--peak-gflops", o.peak_gflops, 1e-3, kMaxPeakGflops);

  // The estimate is exact for the steady-state step (reckon reconcile proves it): checked before allocating.
  // The data file is held in memory beside the step, so it gets what the step leaves of the budget.
  const int64_t budget = memory_budget(o.max_memory);
  const int64_t step_peak = check_step_fits("train", m, config.optim, budget, ranks, rank);
  TokenData data = data_source == "random"
                       ? TokenData::random(m.vocab_size, config.seed)
                       : TokenData::from_file(data_source, m.vocab_size, m.context_length, budget - step_peak);
  MemoryEstimateOptions estimate_options;
  estimate_options.data_parallel_ranks = ranks;
  estimate_options.data_parallel_rank = rank;
  const MemoryEstimate estimate = estimate_step_memory(m, estimate_options);

  const MachineInfo machine = machine_info();
  const double peak_gflops = o.peak_gflops > 0 ? o.peak_gflops : measure_fma_peak_gflops(0.2);
  fmt::print("config: {} | {}\n", config.preset, describe(m));
  fmt::print("data: {} | steps: {} | peak for MFU: {:.0f} GFLOP/s ({})\n", data.description(), o.steps, peak_gflops,
             o.peak_gflops > 0 ? "--peak-gflops" : "measured FMA peak");
  fmt::print("memory: estimated step peak {} B ({} MiB) within the budget of {} B ({} MiB)\n", fmt_int(estimate.peak_total),
             fmt_bytes_mib(estimate.peak_total), fmt_int(budget), fmt_bytes_mib(budget));

  Counters& counters = reckon::counters();
  counters.reset();
  counters.clear_events();
  counters.set_record_events(!o.trace_path.empty() || want_report);
  tracker().clear_timeline();

  TrainingSession run(local, ranks > 1);
  if (comm_active()) {
    static const char* const kStages[] = {
        "DDP: gradients all-reduced in buckets of {} MiB",
        "ZeRO-1: gradients all-reduced in buckets of {} MiB, AdamW state sharded, parameters all-gathered after each step",
        "ZeRO-2: gradients reduce-scattered per layer into shards, AdamW state sharded, parameters all-gathered after "
        "each step",
        "ZeRO-3: parameters, gradients and AdamW state sharded; each layer's parameters all-gathered where used, its "
        "gradients reduce-scattered"};
    fmt::print("data parallel (--zero {}): {} ranks × batch {} = global batch {}; {}\n", m.zero_stage, ranks,
               m.batch_size, config.model.batch_size,
               fmt::format(fmt::runtime(kStages[m.zero_stage]), m.bucket_cap_mb));
  }
  const Transformer& model = run.model;
  if (resume_file) {
    restore_checkpoint(run, *resume_file, resume, o.resume_path);
    resume_file.reset();  // its bytes are in the model and the optimizer now
    fmt::print("resumed: {} after step {} (AdamW step {}); steps {} to {}\n", o.resume_path, resume.steps,
               resume.optimizer_steps, first_step, last_step);
  }
  fmt::print("parameters: {} ({} MiB float32)\n", fmt_int(model.num_parameters()),
             fmt_bytes_mib(4 * model.num_parameters()));

  const bool tty = isatty(fileno(stdout)) != 0;
  const int64_t tokens_per_step = config.model.batch_size * m.context_length;  // the global batch's tokens
  std::vector<StepLog> log;
  int64_t measured_steps = o.steps;
  const int64_t warm_up_steps = std::min<int64_t>(kWarmUpSteps, o.steps - 1);  // 0: a 1-step run reports step 1
  // The last step's slice of the allocator timeline and of the op events: the report's picture of one step.
  size_t last_step_first_event = 0, last_step_first_op = 0;
  std::array<int64_t, kNumCategories> last_step_base{};
  for (int64_t step = first_step; step <= last_step; ++step) {
    // Step k trains on batch k - 1 of the data, resumed or not; each rank on its rows of it.
    data.fill_batch_rows(run.tokens, run.targets, step - 1, rank * m.batch_size, config.model.batch_size);
    if (step == last_step && want_report) {
      last_step_first_event = tracker().timeline().size();
      last_step_first_op = counters.events().size();
      const MemoryStats now = tracker().stats();
      for (Category c : all_categories()) last_step_base[static_cast<size_t>(c)] = now[c].allocated_bytes.current;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const double loss = run.step();
    if (!std::isfinite(loss)) {
      if (tty) fmt::print("\n");
      fmt::print(stderr, "reckon: error: loss is {} at step {}; stopping (no output files written). Try a lower lr.\n",
                 loss, step);
      return kExitDiverged;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log.push_back({step, loss, seconds});
    if (!o.quiet) {
      std::string line = fmt::format("step {:>5}/{} | loss {:.4f} | {:>9.1f} tok/s | {:>8.2f} ms", step, last_step,
                                     loss, tokens_per_step / seconds, seconds * 1e3);
      if (tty) {  // the ETA from the mean step so far (a terminal only: logs keep one plain line per step)
        double sum = 0;
        for (const StepLog& l : log) sum += l.seconds;
        line += fmt::format(" | ETA {:.0f} s  ", sum / static_cast<double>(log.size()) * static_cast<double>(last_step - step));
      }
      if (tty) {
        fmt::print("\r{}", line);
        std::fflush(stdout);
      } else {
        fmt::print("{}\n", line);
      }
    }
    // The tables describe the steady state: the warm-up steps (kWarmUpSteps, fewer in a short run) are
    // left out of the counters and of tokens/s.
    if (step - first_step + 1 == warm_up_steps) {
      counters.reset();
      measured_steps = o.steps - warm_up_steps;
    }
  }
  if (tty && !o.quiet) fmt::print("\n");

  double steady_seconds = 0.0;
  for (const StepLog& s : log) steady_seconds += s.step - first_step + 1 > warm_up_steps ? s.seconds : 0.0;
  const double tok_s = tokens_per_step * measured_steps / steady_seconds;
  fmt::print("\nsteady state over {} step(s) after {} warm-up: {:.1f} tokens/s, {:.2f} ms/step; loss {:.4f} -> {:.4f}\n",
             measured_steps, warm_up_steps, tok_s, steady_seconds / measured_steps * 1e3, log.front().loss, log.back().loss);
  if (ranks > 1) {  // the collectives, with NCCL-tests' bus bandwidth
    for (const auto& [key, n] : counters.by_op()) {
      if (key.phase != Phase::communication || n.calls == 0) continue;
      // NCCL-tests' size: the buffer (all_reduce: in = out; all_gather: the gathered output).
      const double bytes = static_cast<double>(key.op == "all_gather" ? n.bytes_written : n.bytes_read) / static_cast<double>(n.calls);
      const double seconds = n.seconds / static_cast<double>(n.calls);
      fmt::print("{}: {} calls over {} step(s), {} B in / {} B out per call on rank {}, {:.3f} ms per call: algbw "
                 "{:.2f} GB/s, busbw {:.2f} GB/s ({} ranks)\n",
                 key.op, n.calls, measured_steps, fmt_int(n.bytes_read / n.calls),
                 fmt_int(n.bytes_written / n.calls), rank, seconds * 1e3, bytes / seconds * 1e-9,
                 bus_bandwidth(key.op.c_str(), bytes, seconds, ranks) * 1e-9, ranks);
    }
  }
  // MFU and HFU (estimators/flops.h): model FLOPs from the config in both attention conventions, hardware FLOPs as
  // the counters measured them (forward + backward + recompute), over the steady step time and the peak above.
  const UtilizationFlops uf = utilization_flops(m, config.optim);
  int64_t executed = 0;
  for (Phase p : {Phase::forward, Phase::backward, Phase::recompute}) executed += counters.phase_total(p).flops();
  executed /= std::max<int64_t>(measured_steps, 1);
  const double step_seconds = steady_seconds / measured_steps, peak_flops = peak_gflops * 1e9;
  auto utilization = [&](int64_t flops) { return static_cast<double>(flops) / step_seconds / peak_flops; };
  fmt::print("utilization of {:.0f} GFLOP/s: MFU {:.1f}% (model FLOPs {}, causal attention) / {:.1f}% (full T×T "
             "convention: {}); HFU {:.1f}% (executed: {} FLOPs per step{})\n",
             peak_gflops, 100 * utilization(uf.model_causal), fmt_int(uf.model_causal), 100 * utilization(uf.model_full),
             fmt_int(uf.model_full), 100 * utilization(executed), fmt_int(executed),
             m.recompute == Recompute::none ? "" : fmt::format(", recompute {} included", recompute_name(m.recompute)));
  fmt::print("\n## Memory at the peak, by category\n\n{}\n", memory_table(tracker().stats()));
  fmt::print("## The 10 largest tensors live at the peak\n\n{}\n", live_at_peak_table(tracker(), 10));
  fmt::print("## FLOPs and bytes per op x phase (sum over {} step(s))\n\n{}\n", measured_steps, counters_table(counters));
  fmt::print("## Per step\n\n{}", phase_totals_table(counters, measured_steps, peak_gflops));
  if (o.profile) {
    // The matmul probe runs with the precision's operand dtype (bf16 in the mixed modes).
    const Roofline cpu{"this CPU", measure_matmul_gflops(0.3, m.dtypes().act) * 1e9, peak_gflops * 1e9,
                       measure_bandwidth_gbs(0.3) * 1e9};
    tracker().empty_cache();
    fmt::print("\n## Profile: where the step's time goes\n\n{}", profile_table(counters, measured_steps, cpu));
  }

  nlohmann::json report;
  if (want_report) {
    const std::vector<MemoryEvent> timeline = tracker().timeline();
    const std::vector<OpEvent>& op_events = counters.events();
    report["memory"] = memory_timeline_json(
        std::vector<MemoryEvent>(timeline.begin() + static_cast<std::ptrdiff_t>(std::min(last_step_first_event, timeline.size())), timeline.end()),
        last_step_base,
        std::vector<OpEvent>(op_events.begin() + static_cast<std::ptrdiff_t>(std::min(last_step_first_op, op_events.size())), op_events.end()));
    nlohmann::json predicted;
    for (Category c : all_categories()) predicted[category_name(c)] = estimate.peak_breakdown[static_cast<size_t>(c)];
    report["memory"]["predicted_peak"] = estimate.peak_total;
    report["memory"]["predicted_breakdown"] = predicted;
    nlohmann::json largest = nlohmann::json::array();
    for (const LiveBlock& blk : tracker().live_at_peak()) {  // measured: the allocator's live set at its peak
      if (largest.size() == 10) break;
      largest.push_back({{"name", blk.name}, {"category", category_name(blk.category)}, {"bytes", blk.allocated_bytes}});
    }
    report["memory"]["peak"]["largest"] = largest;
    report["title"] = fmt::format("reckon train: {} ({} steps{})", config.preset, o.steps,
                                  resume.steps > 0 ? fmt::format(", resumed after step {}", resume.steps) : "");
    report["config"] = describe(m);
    report["machine"] = machine_summary(machine);
    report["ms_per_step"] = steady_seconds / measured_steps * 1e3;
    report["tokens_per_second"] = tok_s;
    nlohmann::json ops = nlohmann::json::array();
    const double per = 1.0 / static_cast<double>(std::max<int64_t>(measured_steps, 1));
    // Per step: the FLOP reconciliation column (this rank's step under mpirun).
    const auto analytic = estimate_step_counts(m, config.optim, ranks, rank);
    for (const auto& [key, n] : counters.by_op()) {
      const auto it = analytic.find(key);
      ops.push_back({{"op", key.op}, {"phase", phase_name(key.phase)}, {"ms", n.seconds * 1e3 * per},
                     {"gflop", n.flops() * 1e-9 * per}, {"gbytes", (n.bytes_read + n.bytes_written) * 1e-9 * per},
                     {"flops", n.flops() / std::max<int64_t>(measured_steps, 1)},
                     {"analytic_flops", it == analytic.end() ? 0 : it->second.flops()}});
    }
    report["ops"] = ops;
    report["roofline"] = {{"matmul_gflops", measure_matmul_gflops(0.2, m.dtypes().act)}, {"fma_gflops", peak_gflops},
                          {"bandwidth_gbs", measure_bandwidth_gbs(0.2)}};
    tracker().empty_cache();
  }
  if (rank != 0) return 0;  // rank 0 writes every file (the ranks' models are identical)
  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["report"] = report;
    j["machine"] = {{"summary", machine_summary(machine)}, {"threads", machine.threads},
                    {"onednn_version", machine.onednn_version}, {"onednn_isa", machine.onednn_isa},
                    {"cpu", machine.cpu_model}};
    j["config"] = config_json(config);
    j["data"] = data.description();
    j["num_parameters"] = model.num_parameters();
    j["steps"] = nlohmann::json::array();
    for (const StepLog& s : log) {
      j["steps"].push_back({{"step", s.step}, {"loss", s.loss}, {"seconds", s.seconds},
                            {"tokens_per_second", tokens_per_step / s.seconds}});
    }
    j["warm_up_steps"] = warm_up_steps;
    j["tokens_per_second_steady"] = tok_s;
    j["utilization"] = {{"peak_gflops", peak_gflops}, {"seconds_per_step", step_seconds},
                        {"model_flops_causal", uf.model_causal}, {"model_flops_full", uf.model_full},
                        {"hardware_flops", executed}, {"mfu_causal", utilization(uf.model_causal)},
                        {"mfu_full", utilization(uf.model_full)}, {"hfu", utilization(executed)}};
    j["memory"] = memory_json(tracker(), 10);
    j["counters"] = counters_json(counters, measured_steps, peak_gflops);
    write_output_file("--json", o.json_path, j.dump(2) + "\n");
    fmt::print("\nwrote {}\n", o.json_path);
  }
  if (!o.report_path.empty()) {
    write_output_file("--report", o.report_path, report_html(report));
    fmt::print("wrote {} (open it in a browser)\n", o.report_path);
  }
  if (!o.plot_memory_path.empty()) {
    write_output_file("--plot-memory", o.plot_memory_path, memory_svg(report));
    fmt::print("wrote {}\n", o.plot_memory_path);
  }
  if (!o.save_path.empty()) {
    write_output_file("--save", o.save_path, checkpoint_bytes(run, config, last_step, data_source));
    fmt::print("wrote {} (checkpoint after step {})\n", o.save_path, last_step);
  }
  if (!o.dump_grads_path.empty()) {
    write_output_file("--dump-grads", o.dump_grads_path,
                      gradients_bytes(run.model, {{"batch.tokens", run.tokens}, {"batch.targets", run.targets}},
                                      {{"step", std::to_string(last_step)},
                                                  {"loss", fmt::format("{:.17g}", log.back().loss)},
                                                  {"config", fmt::format("{}", fmt::join(config_overrides(config), "\n"))}}));
    fmt::print("wrote {} (gradients of step {})\n", o.dump_grads_path, last_step);
  }
  if (!o.trace_path.empty()) {
    write_output_file("--trace", o.trace_path, trace_json(counters, tracker()).dump() + "\n");
    fmt::print("wrote {} (open in ui.perfetto.dev or chrome://tracing)\n", o.trace_path);
  }
  return 0;
}

}  // namespace reckon
