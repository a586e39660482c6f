// A full training step (zero_grad, forward, backward, AdamW) on presets S and M: tokens/s, model GFLOP/s
// (counted FLOPs, estimators/flops) and % of the FMA peak measured in the same binary; instrumentation on vs
// off (counters + allocator timeline) as separate runs and as interleaved pairs; scaling with B·T and T. Run:
//   OMP_NUM_THREADS=2 build/bench_train_step --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>

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

// precision: 0 fp32, 1 amp-bf16 (autocast), 2 bf16 (master weights, bf16 grads).
const char* const kPrecisions[] = {"fp32", "amp-bf16", "bf16"};

void BM_train_step(benchmark::State& state) {
  const char* preset = state.range(0) == 0 ? "S" : "M";
  const bool instrumented = state.range(1) != 0;
  const char* precision = kPrecisions[state.range(2)];
  TrainConfig config = preset_config(preset);
  apply_override(config, std::string("precision=") + precision);
  if (config.model.dtypes().act == DType::bf16 && !bf16_matmul_unavailable_reason().empty()) {
    state.SkipWithError(bf16_matmul_unavailable_reason().c_str());
    return;
  }
  const ModelConfig& m = config.model;
  TrainingSession run(config);
  TokenData data = TokenData::random(m.vocab_size, 1);
  data.fill_batch(run.tokens, run.targets, 0);
  set_instrumentation(instrumented);
  run.warm_up();  // primitives, AdamW state, first touch
  for (auto _ : state) benchmark::DoNotOptimize(run.step());
  set_instrumentation(true);
  const int64_t flops = estimate_step_flops(m, config.optim).total();
  state.SetLabel(std::string(preset) + " " + precision + (instrumented ? " instrumented" : " bare"));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(m.batch_size * m.context_length),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_train_step)
    ->ArgNames({"preset_M", "instrumented", "precision"})
    ->ArgsProduct({{0, 1}, {1, 0}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

// What instrumentation costs, paired: each iteration times one bare and one instrumented step back to back
// (order alternating), so the host's drift hits both alike; overhead = median over pairs of instr / bare − 1.
void BM_instrumentation_overhead(benchmark::State& state) {
  const char* preset = state.range(0) == 0 ? "S" : "M";
  TrainConfig config = preset_config(preset);
  TrainingSession run(config);
  TokenData data = TokenData::random(config.model.vocab_size, 1);
  data.fill_batch(run.tokens, run.targets, 0);
  run.warm_up();
  std::vector<double> bare, instrumented, ratio;
  auto timed_step = [&](bool on) {
    set_instrumentation(on);
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(run.step());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (auto _ : state) {
    const bool instrumented_first = bare.size() % 2 == 1;
    const double first = timed_step(instrumented_first), second = timed_step(!instrumented_first);
    bare.push_back(instrumented_first ? second : first);
    instrumented.push_back(instrumented_first ? first : second);
    ratio.push_back(instrumented.back() / bare.back());
  }
  set_instrumentation(true);
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  state.SetLabel(std::string(preset) + " (bare, instrumented) pairs");
  state.counters["pairs"] = static_cast<double>(ratio.size());
  state.counters["bare_ms"] = 1e3 * median(bare);
  state.counters["instrumented_ms"] = 1e3 * median(instrumented);
  state.counters["overhead_%"] = 100.0 * (median(ratio) - 1.0);
}
BENCHMARK(BM_instrumentation_overhead)
    ->ArgName("preset_M")
    ->Arg(0)
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(15.0);

// Scaling on model S (L 4, D 512, d_ff 2048, V 8192): step time vs tokens per step (B·T at T = 256) and vs T
// at 2,048 tokens per step (attention's T² share grows). attention_% is attention's share of the step's
// counted op time (forward + backward).
void BM_train_step_scaling(benchmark::State& state) {
  TrainConfig config = preset_config("S");
  config.model.batch_size = state.range(0);
  config.model.context_length = state.range(1);
  validate(config);
  const ModelConfig& m = config.model;
  TrainingSession run(config);
  TokenData data = TokenData::random(m.vocab_size, 1);
  data.fill_batch(run.tokens, run.targets, 0);
  run.warm_up();
  counters().reset();
  int64_t steps = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(run.step());
    ++steps;
  }
  double all = 0, attention = 0;
  for (const auto& [key, c] : counters().by_op()) {
    all += c.seconds;
    if (key.op == "attention") attention += c.seconds;
  }
  const StepFlops flops = estimate_step_flops(m, config.optim);
  double attention_flops = 0;
  for (const auto& [key, c] : estimate_step_counts(m, config.optim)) {
    if (key.op == "attention") attention_flops += static_cast<double>(c.flops());
  }
  state.SetLabel(
      fmt::format("S B={} T={} ({} tokens)", m.batch_size, m.context_length, m.batch_size * m.context_length));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(m.batch_size * m.context_length),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = benchmark::Counter(flops.total() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["attention_time_%"] = all > 0 ? 100.0 * attention / all : 0.0;
  state.counters["attention_flops_%"] = 100.0 * attention_flops / static_cast<double>(flops.total());
}
BENCHMARK(BM_train_step_scaling)
    ->ArgNames({"B", "T"})
    ->Args({1, 256})
    ->Args({2, 256})
    ->Args({4, 256})
    ->Args({8, 256})
    ->Args({16, 256})
    ->Args({32, 64})
    ->Args({16, 128})
    ->Args({4, 512})
    ->Args({2, 1024})
    ->Args({1, 2048})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
