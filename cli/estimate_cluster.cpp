#include "cli/estimate_cluster.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "cli/table.h"
#include "estimators/flops.h"
#include "estimators/memory.h"
#include "model/layout.h"
#include "runtime/check.h"

namespace reckon {

namespace {

std::string gb(double bytes) { return fmt::format("{:.2f} GB", bytes / 1e9); }

// One stage's figures for the rank with the largest peak.
struct StageFigures {
  int rank = 0;
  MemoryEstimate peak;       // one rank's step at the configured batch per GPU
  int64_t model_states = 0;  // parameters, gradients, optimizer state between steps (no batch, no activations)
  double paper_model_states = 0;
  int64_t max_batch = 0;
  int64_t comm_calls = 0;
  CollectiveTime comm;
  double psi_volume = 0;  // elements on the wire per rank / Ψ
  double compute_seconds = 0;
};

// Every figure of the section, computed once; the markdown and the JSON are rendered from it.
struct ClusterFigures {
  const TrainConfig& config;
  const GpuSpec& gpu;
  double peak_flops, mfu;
  std::string budget_text;
  Link link;
  int64_t ranks, b, t, psi;
  ParameterStateLayout layout;
  double v, g, k, n, p;  // bytes per parameter (value, gradient, optimizer state), ranks, parameters
  std::array<StageFigures, 4> st;
  double tokens, steps;  // the run's tokens at the global batch N × B, and its steps
  double cat(const StageFigures& f, Category c) const {
    return static_cast<double>(f.peak.peak_breakdown[static_cast<int>(c)]);
  }
};

// Which ranks to replay: all of them up to 8 (their shards differ by an element and their segment count),
// else the first, a middle and the last.
std::vector<int> ranks_to_replay(int64_t ranks) {
  std::vector<int> check_ranks;
  if (ranks <= 8) {
    for (int r = 0; r < ranks; ++r) check_ranks.push_back(r);
  } else {
    check_ranks = {0, static_cast<int>(ranks / 2), static_cast<int>(ranks - 1)};
  }
  return check_ranks;
}

void compute_stages(ClusterFigures& c, int64_t budget) {
  const ModelConfig& m = c.config.model;
  const TrainConfig& config = c.config;
  const int64_t ranks = c.ranks, psi = c.psi;
  const double v = c.v, g = c.g, k = c.k, n = c.n, p = c.p, peak_flops = c.peak_flops, mfu = c.mfu;
  const DTypePlan plan = m.dtypes();
  const Link& link = c.link;
  const std::vector<int> check_ranks = ranks_to_replay(ranks);
  std::array<StageFigures, 4>& st = c.st;
  for (int64_t stage = 0; stage <= 3; ++stage) {
    ModelConfig ms = m;
    ms.zero_stage = stage;
    StageFigures& f = st[static_cast<size_t>(stage)];
    MemoryEstimateOptions opts;
    opts.onednn_scratchpad = false;
    opts.live_at_peak = false;
    opts.data_parallel_ranks = static_cast<int>(ranks);
    f.peak.peak_total = -1;
    for (int r : check_ranks) {
      opts.data_parallel_rank = r;
      MemoryEstimate e = estimate_step_memory(ms, opts);
      if (e.peak_total > f.peak.peak_total) f.peak = std::move(e), f.rank = r;
    }
    opts.data_parallel_rank = f.rank;
    MemoryEstimateOptions states = opts;
    states.batch_tensors = false;
    f.model_states = estimate_step_memory(ms, states).step_end_total;
    f.paper_model_states = stage == 0   ? (v + g + k) * p
                           : stage == 1 ? (v + g) * p + k * p / n
                           : stage == 2 ? v * p + (g + k) * p / n
                                        : (v + g + k) * p / n;
    f.max_batch = max_batch_in_budget(ms, budget, opts, memory_linear_in_batch(ms, opts, false));
    const auto counts = estimate_step_counts(ms, config.optim, static_cast<int>(ranks), f.rank);
    f.comm = communication_time(counts, ranks, link);
    f.psi_volume = communication_psi(counts, ranks, dtype_bytes(plan.param), psi);
    double flops = 0;
    for (const auto& [key, c] : counts) {
      if (key.phase == Phase::communication)
        f.comm_calls += c.calls;
      else
        flops += static_cast<double>(c.flops());
    }
    f.compute_seconds = flops / (peak_flops * mfu);
  }
}

std::string cluster_markdown(const ClusterFigures& c) {
  const ModelConfig& m = c.config.model;
  const int64_t ranks = c.ranks, b = c.b, psi = c.psi;
  const double v = c.v, g = c.g, k = c.k, mfu = c.mfu, peak_flops = c.peak_flops, tokens = c.tokens, steps = c.steps;
  const std::array<StageFigures, 4>& st = c.st;
  const ParameterStateLayout& layout = c.layout;
  const std::string& budget_text = c.budget_text;
  const GpuSpec& gpu = c.gpu;
  const Link& link = c.link;
  auto cat = [&](const StageFigures& f, Category cc) { return c.cat(f, cc); };
  const int64_t chosen = m.zero_stage;
  Table tb;
  tb.header = {"per GPU", "stage 0 (DDP)", "stage 1", "stage 2", "stage 3", "convention"};
  tb.right_align = {false, true, true, true, true, false};
  auto row = [&](const std::string& what, auto value, const std::string& convention) {
    std::vector<std::string> r = {what};
    for (int64_t s = 0; s <= 3; ++s) {
      const std::string x = value(st[static_cast<size_t>(s)]);
      r.push_back(s == chosen ? "**" + x + "**" : x);
    }
    r.push_back(convention);
    tb.add(std::move(r));
  };
  row(
      "parameters", [&](const StageFigures& f) { return gb(cat(f, Category::parameter)); },
      "at the peak; stage 3: the shard + the layer(s) gathered there");
  row(
      "gradients", [&](const StageFigures& f) { return gb(cat(f, Category::gradient)); },
      "stages 2, 3: the shard + the full gradients of the unit in backward");
  row(
      "optimizer state", [&](const StageFigures& f) { return gb(cat(f, Category::optimizer_state)); },
      layout.optimizer_bytes == 12 ? "master, m, v of the rank's 1/N (stages ≥ 1)"
                                   : "m, v of the rank's 1/N (stages ≥ 1)");
  row(
      "activations", [&](const StageFigures& f) { return gb(cat(f, Category::activation)); },
      fmt::format("batch {} per GPU", b));
  row(
      "temporaries", [&](const StageFigures& f) { return gb(cat(f, Category::temporary)); },
      "incl. gradient buckets (stages 0, 1), float32 reduce-scatter buffers (bf16 grads)");
  row(
      "**peak**", [&](const StageFigures& f) { return gb(static_cast<double>(f.peak.peak_total)); },
      ranks <= 8 ? "the largest of the N ranks' replayed peaks" : "the largest of ranks 0, N/2, N − 1");
  row(
      "model states between steps", [&](const StageFigures& f) { return gb(static_cast<double>(f.model_states)); },
      "reckon: parameters + gradients + optimizer state a rank keeps (64-byte rounded tensors)");
  row(
      "ZeRO paper's rule", [&](const StageFigures& f) { return gb(f.paper_model_states); },
      fmt::format("(v + g + K)·Ψ with v = {:.0f}, g = {:.0f}, K = {:.0f} B: (v+g+K)Ψ, (v+g)Ψ + KΨ/N, vΨ + (g+K)Ψ/N, "
                  "(v+g+K)Ψ/N",
                  v, g, k));
  row(
      fmt::format("max batch per GPU in {}", budget_text),
      [&](const StageFigures& f) { return fmt::format("{}", f.max_batch); },
      "the replayed peak (activations included, no scratchpad): peak(B) ≤ budget < peak(B + 1)");
  row(
      "collective calls per step", [&](const StageFigures& f) { return fmt_int(f.comm_calls); },
      "all_reduce per bucket (0, 1); all_gather, reduce_scatter per parameter (1–3), per use (3)");
  row(
      "sent per GPU per step", [&](const StageFigures& f) { return gb(f.comm.wire_bytes); },
      "ring: all-reduce 2(N−1)/N·S, reduce-scatter and all-gather (N−1)/N·S; reckon reduces in float32");
  row(
      "… in Ψ (reckon / paper)",
      [&](const StageFigures& f) { return fmt::format("{:.3f} / {}", f.psi_volume, &f == &st[3] ? "3" : "2"); },
      "elements on the wire per rank / parameters; the paper's 2Ψ and 3Ψ are the large-N limits");
  row(
      "communication time", [&](const StageFigures& f) { return fmt::format("{:.3f} s", f.comm.seconds); },
      "alpha-beta: calls × steps × α + sent / β");
  row(
      fmt::format("compute time at {:.0f}%", mfu * 100),
      [&](const StageFigures& f) { return fmt::format("{:.3f} s", f.compute_seconds); },
      "the rank's executed FLOPs (forward + backward + recompute + AdamW on its shard) / (peak × utilization)");
  row(
      "step time (no overlap / full)",
      [&](const StageFigures& f) {
        return fmt::format("{:.3f} / {:.3f} s", f.compute_seconds + f.comm.seconds,
                           std::max(f.compute_seconds, f.comm.seconds));
      },
      "compute + communication, or the larger of the two if communication hid behind compute");
  row(
      "training days (no overlap / full)",
      [&](const StageFigures& f) {
        return fmt::format("{:.1f} / {:.1f}", steps * (f.compute_seconds + f.comm.seconds) / 86400,
                           steps * std::max(f.compute_seconds, f.comm.seconds) / 86400);
      },
      fmt::format("{:.3e} tokens at global batch {} × {}{} = {:.0f} steps", tokens, ranks, b,
                  m.micro_batches() == 1 ? "" : fmt::format(" × {} micro-batches", m.micro_batches()), steps));

  std::string text;
  text = fmt::format(
      "\n## Data parallel: {} × {}, ZeRO stages side by side (the config's stage {} in bold)\n\n"
      "conventions: one rank's step as reckon implements it (`mpirun -np N reckon reconcile --zero S` checks it per "
      "rank), batch {} per GPU, precision {}; Ψ = {} parameters; link: {}; {} at {:.0f}% of {:.1f} TFLOP/s.\n\n{}",
      ranks, gpu.description, chosen, b, precision_name(m.precision), fmt_int(psi), link.source,
      gpu_math_for(m.precision), mfu * 100, peak_flops / 1e12, tb.markdown());
  const int64_t fits = st[static_cast<size_t>(chosen)].max_batch;
  if (fits == 0) {
    text += fmt::format(
        "not even batch 1 per GPU fits {} at stage {}: activations alone exceed what sharding "
        "the model states frees; recompute, flash attention or model parallelism (not modelled "
        "here) would be needed\n",
        budget_text, chosen);
  } else if (b > fits) {
    text += fmt::format(
        "batch {} per GPU does not fit {} at stage {} (max {}): set batch_size {} and gradient_accumulation_steps {} "
        "for a global batch at least as large, or use recompute\n",
        b, budget_text, chosen, fits, fits, (b * m.micro_batches() + fits - 1) / fits);
  }
  return text;
}

nlohmann::json cluster_json(const ClusterFigures& c) {
  const int64_t ranks = c.ranks, b = c.b, chosen = c.config.model.zero_stage;
  const double steps = c.steps;
  const std::array<StageFigures, 4>& st = c.st;
  const Link& link = c.link;
  const GpuSpec& gpu = c.gpu;
  auto cat = [&](const StageFigures& f, Category cc) { return c.cat(f, cc); };
  nlohmann::json stages = nlohmann::json::array();
  for (int64_t s = 0; s <= 3; ++s) {
    const StageFigures& f = st[static_cast<size_t>(s)];
    stages.push_back({{"zero_stage", s},
                      {"rank", f.rank},
                      {"peak_bytes", f.peak.peak_total},
                      {"peak_breakdown",
                       {{"parameter", cat(f, Category::parameter)},
                        {"gradient", cat(f, Category::gradient)},
                        {"optimizer_state", cat(f, Category::optimizer_state)},
                        {"activation", cat(f, Category::activation)},
                        {"temporary", cat(f, Category::temporary)}}},
                      {"model_states_bytes", f.model_states},
                      {"paper_model_states_bytes", f.paper_model_states},
                      {"max_batch_per_gpu", f.max_batch},
                      {"collective_calls", f.comm_calls},
                      {"sent_bytes_per_gpu", f.comm.wire_bytes},
                      {"psi_volume", f.psi_volume},
                      {"paper_psi_volume", s == 3 ? 3 : 2},
                      {"communication_seconds", f.comm.seconds},
                      {"compute_seconds", f.compute_seconds},
                      {"steps", steps},
                      {"days_no_overlap", steps * (f.compute_seconds + f.comm.seconds) / 86400},
                      {"days_full_overlap", steps * std::max(f.compute_seconds, f.comm.seconds) / 86400}});
  }
  return {{"gpus", ranks},
          {"gpu", gpu.name},
          {"batch_per_gpu", b},
          {"gradient_accumulation_steps", c.config.model.micro_batches()},
          {"zero_stage", chosen},
          {"link",
           {{"name", link.name},
            {"alpha_seconds", link.alpha_seconds},
            {"bytes_per_second", link.bytes_per_second},
            {"source", link.source}}},
          {"stages", stages}};
}

}  // namespace

Link checked_link(const GpuSpec& gpu, const ClusterOptions& o) {
  check_range("--gpus", o.gpus, 1, 65536);
  Link link = gpu_link(gpu, o.gpus, o.link);
  if (o.link_gbps_given) {
    check_range("--link-gbps", o.link_gbps, 1e-3, 1e6);
    link.bytes_per_second = o.link_gbps * 1e9;
    link.source = fmt::format("{} at {} GB/s (--link-gbps)", link.name, o.link_gbps);
  }
  if (o.link_latency_given) {
    check_range("--link-latency-us", o.link_latency_us, 0.0, 1e6);
    link.alpha_seconds = o.link_latency_us * 1e-6;
    link.source += fmt::format("; α {} µs (--link-latency-us)", o.link_latency_us);
  }
  return link;
}

ClusterReport cluster_report(const TrainConfig& config, const GpuSpec& gpu, double peak_flops, double mfu,
                             int64_t budget, const std::string& budget_text, int64_t train_steps, int64_t train_batch,
                             const ClusterOptions& o) {
  const ModelConfig& m = config.model;
  const ParameterStateLayout layout = parameter_state_layout(m.precision, m.grad_dtype);
  const int64_t psi = parameter_layout(m).total();
  ClusterFigures c{config,
                   gpu,
                   peak_flops,
                   mfu,
                   budget_text,
                   checked_link(gpu, o),
                   o.gpus,
                   m.batch_size,
                   m.context_length,
                   psi,
                   layout,
                   static_cast<double>(layout.value_bytes),
                   static_cast<double>(layout.grad_bytes),
                   static_cast<double>(layout.optimizer_bytes),
                   static_cast<double>(o.gpus),
                   static_cast<double>(psi),
                   {},
                   0,
                   0};
  compute_stages(c, budget);
  c.tokens = static_cast<double>(train_steps) * static_cast<double>(train_batch) * static_cast<double>(c.t);
  c.steps = c.tokens / (c.n * static_cast<double>(c.b * m.micro_batches()) * static_cast<double>(c.t));
  return ClusterReport{cluster_markdown(c), cluster_json(c)};
}

}  // namespace reckon
