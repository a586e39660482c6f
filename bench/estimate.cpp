// `reckon estimate` cost against num_layers: the whole report (parameters, memory replay, linear fit, max
// batch, textbook comparison, FLOPs, training time) in-process for the GPT-2 XL shape at L = 1 … 1024, and the
// presets users ask about with oneDNN's scratchpad queried. Linear in L means layers_per_s flat
// and time(1024) / time(64) ≈ 16 (the replay once copied the live set at every new peak: quadratic). Run:
//   OMP_NUM_THREADS=2 build/bench_estimate --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <string>

#include "bench/bench_main.h"
#include "cli/estimate.h"
#include "estimators/memory.h"
#include "model/config.h"

namespace {

using namespace reckon;

// The whole report, arithmetic only (no oneDNN queries), for gpt2-xl with L layers.
void BM_estimate_report(benchmark::State& state) {
  EstimateOptions o;
  o.preset = "gpt2-xl";
  o.overrides = {"num_layers=" + std::to_string(state.range(0))};
  o.query_scratchpad = false;
  for (auto _ : state) benchmark::DoNotOptimize(make_estimate_report(o));
  state.counters["layers_per_s"] =
      benchmark::Counter(static_cast<double>(state.range(0)), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_estimate_report)->RangeMultiplier(4)->Range(1, 1024)->UseRealTime()->Unit(benchmark::kMillisecond);

// One memory replay with the live set at the peak named (the unit the report repeats a few times).
void BM_memory_replay(benchmark::State& state) {
  ModelConfig m = preset_config("gpt2-xl").model;
  m.num_layers = state.range(0);
  MemoryEstimateOptions pure;
  pure.onednn_scratchpad = false;
  for (auto _ : state) benchmark::DoNotOptimize(estimate_step_memory(m, pure));
  state.counters["layers_per_s"] =
      benchmark::Counter(static_cast<double>(state.range(0)), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_memory_replay)->RangeMultiplier(4)->Range(1, 1024)->UseRealTime()->Unit(benchmark::kMillisecond);

// What a user runs: the full report with oneDNN's scratchpad queried (primitive descriptors cached after the
// first iteration, as in one process answering several questions).
void BM_estimate_preset(benchmark::State& state, const char* preset) {
  EstimateOptions o;
  o.preset = preset;
  for (auto _ : state) benchmark::DoNotOptimize(make_estimate_report(o));
}
BENCHMARK_CAPTURE(BM_estimate_preset, gpt2_xl, "gpt2-xl")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_estimate_preset, gpt3_175b, "gpt3-175b")->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_estimate_preset, llama2_70b, "llama2-70b")->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
