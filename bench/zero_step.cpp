// ZeRO stages on MPI ranks: the S training step per stage — its time, the time its collectives take
// (counters, phase communication) and their share — and the alpha-beta model of estimators/time.h checked on this
// machine: α and β are fitted to all_reduce timings in the same run (weighted least squares on relative error),
// then the model predicts each collective at each size and each stage's whole communication per step from the
// analytic counts (estimate_step_counts); counters "predicted/measured" hold the ratios (target 0.75 to 1.25).
// α and β are fitted per collective (Open MPI runs a different algorithm for each, as NCCL-tests' bus bandwidth
// differs per collective too).
// Every rank runs every benchmark in lockstep (fixed iterations); rank 0 reports. Run (as root add
// OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1):
//   OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 build/bench_zero_step
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench/bench_main.h"
#include "estimators/flops.h"
#include "estimators/time.h"
#include "model/data.h"
#include "optim/step.h"
#include "runtime/comm.h"

namespace {

using namespace reckon;

const char* const kOps[] = {"all_reduce", "reduce_scatter", "all_gather"};
Link g_links[3];  // fitted per collective, in kOps order

const Link& link_for(const std::string& op) {
  for (int i = 0; i < 3; ++i) {
    if (op == kOps[i]) return g_links[i];
  }
  throw std::invalid_argument("no link fitted for " + op);
}

// Median seconds of `reps` calls of a collective on a buffer of `bytes` (rank 0's clock; a barrier before each).
// Each call gets a buffer the previous calls did not touch (a ring of them spanning ≥ 256 MiB, past the 32 MiB
// L3), as a training step's gradients and parameters arrive from memory, not from the cache.
double time_collective(const std::string& op, int64_t bytes, int reps) {
  const int ranks = comm_size();
  const int64_t n = bytes / 4;
  const int64_t slots = std::max<int64_t>(2, (int64_t{256} << 20) / bytes);
  std::vector<float> arena(static_cast<size_t>(n * slots), 1.0f), out(static_cast<size_t>(n), 0.0f);
  std::vector<int64_t> counts, displs;
  for (int r = 0; r < ranks; ++r)
    counts.push_back(n * (r + 1) / ranks - n * r / ranks), displs.push_back(n * r / ranks);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    float* buf = arena.data() + (i % slots) * n;
    comm_barrier();
    const auto t0 = std::chrono::steady_clock::now();
    if (op == "all_reduce")
      all_reduce_sum(buf, n);
    else if (op == "all_gather")
      all_gather_in_place(buf, 4, counts, displs);
    else
      reduce_scatter_sum(buf, out.data(), counts);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// t = c0 + c1·x with x = the bytes each rank sends (collective_time's wire bytes for one call) and c0 = steps·α,
// c1 = 1/β, fitted with weights 1/t² (relative error), so the small sizes count as much as the large ones.
Link fit_link(const std::string& op) {
  const int ranks = comm_size();
  const double steps = op == "all_reduce" ? 2.0 * (ranks - 1) : ranks - 1.0;
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  std::string points;
  for (int64_t bytes : {int64_t{256} << 10, int64_t{4} << 20, int64_t{16} << 20, int64_t{64} << 20}) {
    const double t = time_collective(op, bytes, 9);
    const double x = collective_time(op, static_cast<double>(bytes), 1, ranks, Link{"", 0, 1, ""}).wire_bytes;
    const double w = 1.0 / (t * t);
    sw += w, sx += w * x, sy += w * t, sxx += w * x * x, sxy += w * x * t;
    points += fmt::format(" {} B {:.0f} µs;", bytes, t * 1e6);
  }
  const double c1 = (sw * sxy - sx * sy) / (sw * sxx - sx * sx), c0 = (sy - c1 * sx) / sw;
  Link link{op, std::max(0.0, c0) / steps, 1.0 / c1, ""};
  link.source = fmt::format("{} on {} ranks, medians of 9:{} α = {:.2f} µs per ring step, β = {:.2f} GB/s", op, ranks,
                            points, link.alpha_seconds * 1e6, link.bytes_per_second * 1e-9);
  return link;
}

// Each collective at a size: measured median vs the fitted model.
void BM_collective_model(benchmark::State& state) {
  const std::string op = kOps[state.range(0)];
  const int64_t bytes = state.range(1);
  double measured = 0;
  for (auto _ : state) {
    measured = time_collective(op, bytes, 15);
    state.SetIterationTime(measured);
  }
  const double predicted = collective_time(op, static_cast<double>(bytes), 1, comm_size(), link_for(op)).seconds;
  state.SetLabel(op);
  state.counters["measured_us"] = measured * 1e6;
  state.counters["predicted_us"] = predicted * 1e6;
  state.counters["predicted/measured"] = predicted / measured;
}
BENCHMARK(BM_collective_model)
    ->ArgNames({"op", "bytes"})
    ->ArgsProduct({{0, 1, 2}, {16 << 10, 256 << 10, 4 << 20, 16 << 20, 64 << 20}})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The S step per ZeRO stage on the ranks (global batch 8): step time, measured communication per step and its
// share, and the alpha-beta prediction of that communication from the analytic counts.
void BM_zero_step(benchmark::State& state) {
  const int ranks = comm_size(), rank = comm_rank();
  TrainConfig config = preset_config("S");
  config.model.zero_stage = state.range(0);
  config.model.batch_size /= ranks;
  TrainingSession run(config, ranks > 1);
  TokenData data = TokenData::random(config.model.vocab_size, 1);
  int64_t step = 0;
  auto next = [&] {
    data.fill_batch_rows(run.tokens, run.targets, step++, rank * config.model.batch_size,
                         ranks * config.model.batch_size);
    return run.step();
  };
  for (int64_t i = 0; i < kWarmUpSteps; ++i) next();
  // The links refitted here, next to the steps they predict (this shared host's speed drifts by 2× over minutes).
  for (int i = 0; i < 3; ++i) g_links[i] = fit_link(kOps[i]);
  counters().reset();
  comm_barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(next());
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Each rank's collectives include waiting for the other rank to arrive; the rank that arrives last waits least:
  // the minimum over ranks is the closest to the transfers alone (the model's subject), the maximum what a
  // rank loses.
  double comm = 0;
  for (const auto& [key, c] : counters().by_op()) comm += key.phase == Phase::communication ? c.seconds : 0.0;
  const double comm_min = all_reduce_min_scalar(comm);
  const double steps = static_cast<double>(state.iterations());
  double predicted = 0;  // the analytic counts of this rank's step, each collective on its fitted link
  for (const auto& [key, c] : estimate_step_counts(config.model, config.optim, ranks, rank)) {
    if (key.phase != Phase::communication) continue;
    predicted += collective_time(key.op, collective_buffer_bytes(key.op, c), c.calls, ranks, link_for(key.op)).seconds;
  }
  state.SetLabel(fmt::format("S, zero stage {}, {} ranks", config.model.zero_stage, ranks));
  state.counters["comm_ms"] = comm / steps * 1e3;
  state.counters["comm_share"] = comm / elapsed;
  state.counters["predicted_comm_ms"] = predicted * 1e3;
  state.counters["comm_min_ms"] = comm_min / steps * 1e3;
  state.counters["predicted/measured"] = predicted / (comm / steps);
  state.counters["predicted/min"] = predicted / (comm_min / steps);
}
BENCHMARK(BM_zero_step)
    ->ArgName("stage")
    ->DenseRange(0, 3)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  comm_init(&argc, &argv);
  if (comm_rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  for (int i = 0; i < 3; ++i) {
    g_links[i] = fit_link(kOps[i]);
    benchmark::AddCustomContext(std::string("alpha_beta_") + kOps[i], g_links[i].source);
  }
  const int rc = reckon_bench_main(argc, argv);
  comm_finalize();
  return rc;
}
