// A full training step (zero_grad, forward, backward, AdamW) on presets S and M: tokens/s, model GFLOP/s
// (counted FLOPs, estimators/flops) and % of the FMA peak measured in the same binary; instrumentation on vs
// off (counters + allocator timeline). Run:
//   OMP_NUM_THREADS=2 build/bench_train_step --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"
#include <omp.h>

#include "estimators/flops.h"
#include "model/data.h"
#include "optim/step.h"
#include "runtime/machine.h"

namespace {

using namespace reckon;

void BM_fma_peak(benchmark::State& state) {
  int64_t flops = 0;
  for (auto _ : state) flops = fma_peak_kernel(1 << 20);
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_train_step(benchmark::State& state) {
  const char* preset = state.range(0) == 0 ? "S" : "M";
  const bool instrumented = state.range(1) != 0;
  TrainConfig config = preset_config(preset);
  const ModelConfig& m = config.model;
  TrainingSession run(config);
  TokenData data = TokenData::random(m.vocab_size, 1);
  data.fill_batch(run.tokens, run.targets, 0);
  set_instrumentation(instrumented);
  run.step();  // primitives, AdamW state, first touch
  for (auto _ : state) benchmark::DoNotOptimize(run.step());
  set_instrumentation(true);
  const int64_t flops = estimate_step_flops(m, config.optim).total();
  state.SetLabel(std::string(preset) + (instrumented ? " instrumented" : " bare"));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(m.batch_size * m.context_length), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_train_step)->ArgNames({"preset_M", "instrumented"})->ArgsProduct({{0, 1}, {1, 0}})
    ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
