// Per-op throughput at config-S shapes (B 8, T 256, D 512, H 8, d_ff 2048, V 8192): GFLOP/s and GB/s from the
// ops' own counts (docs/conventions.md). Run: build/bench_ops --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"
#include <omp.h>

#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/residual.h"
#include "ops/rmsnorm.h"
#include "ops/activation.h"
#include "runtime/counters.h"
#include "runtime/machine.h"

namespace {

using namespace reckon;
constexpr int64_t B = 8, T = 256, D = 512, H = 8, F = 2048, V = 8192, N = B * T;

Tensor filled(const Shape& s, const char* name, float v, DType dtype = DType::f32) {
  Tensor t = Tensor::empty(s, Category::temporary, name, dtype);
  t.fill(v);
  return t;
}

void report(benchmark::State& state, const OpCount& per_call) {
  state.counters["GFLOP"] = benchmark::Counter(per_call.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB"] = benchmark::Counter((per_call.bytes_read + per_call.bytes_written) * 1e-9,
                                            benchmark::Counter::kIsIterationInvariantRate);
}

void BM_residual(benchmark::State& state) {
  Tensor a = filled({N, D}, "a", 1.f), b = filled({N, D}, "b", 2.f);
  for (auto _ : state) benchmark::DoNotOptimize(residual_forward(a, b, "out").data());
  report(state, residual_forward_count(N * D));
}
BENCHMARK(BM_residual)->UseRealTime()->Unit(benchmark::kMillisecond);

// bf16: 0 float32 tensors, 1 bf16 (the mixed-precision step's).
void BM_swiglu_forward(benchmark::State& state) {
  const DType t = state.range(0) ? DType::bf16 : DType::f32;
  Tensor a = filled({N, F}, "a", 0.5f, t), b = filled({N, F}, "b", 2.f, t), out = filled({N, F}, "o", 0.f, t);
  for (auto _ : state) gated_activation_forward(Activation::silu, out, a, b);
  report(state, gated_activation_forward_count(Activation::silu, N * F, t));
}
BENCHMARK(BM_swiglu_forward)->ArgName("bf16")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_swiglu_backward(benchmark::State& state) {
  const DType t = state.range(0) ? DType::bf16 : DType::f32;
  Tensor a = filled({N, F}, "a", 0.5f, t), b = filled({N, F}, "b", 2.f, t), g = filled({N, F}, "g", 1.f, t);
  Tensor ga = filled({N, F}, "ga", 0.f, t), gb = filled({N, F}, "gb", 0.f, t);
  for (auto _ : state) gated_activation_backward(Activation::silu, ga, gb, g, a, b);
  report(state, gated_activation_backward_count(Activation::silu, N * F, t));
}
BENCHMARK(BM_swiglu_backward)->ArgName("bf16")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_rmsnorm_forward(benchmark::State& state) {
  Tensor x = filled({N, D}, "x", 0.5f), g = filled({D}, "g", 1.f);
  for (auto _ : state) {
    RmsnormSaved saved;
    benchmark::DoNotOptimize(rmsnorm_forward(saved, x, g, 1e-5f, "n").data());
  }
  report(state, rmsnorm_forward_count(N, D));
}
BENCHMARK(BM_rmsnorm_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_attention_forward(benchmark::State& state) {
  Tensor q = filled({B, T, D}, "q", 0.01f), k = filled({B, T, D}, "k", 0.02f), v = filled({B, T, D}, "v", 0.5f);
  for (auto _ : state) {
    AttentionSaved saved;
    benchmark::DoNotOptimize(attention_forward(saved, q, k, v, H, H, "a").data());
  }
  report(state, attention_forward_count({B, T, H, H, D / H}));
}
BENCHMARK(BM_attention_forward)->UseRealTime()->Unit(benchmark::kMillisecond);

// Arg: logits dtype (0 float32, 1 bf16: the mixed-precision step's lm_head output).
DType logits_dtype(const benchmark::State& state) { return state.range(0) == 1 ? DType::bf16 : DType::f32; }

void BM_cross_entropy_forward(benchmark::State& state) {
  const DType dtype = logits_dtype(state);
  Tensor logits = Tensor::empty({N, V}, Category::temporary, "z", dtype);
  Tensor targets = Tensor::zeros({B, T}, Category::temporary, "t", DType::i32);
  for (auto _ : state) {
    state.PauseTiming();  // forward overwrites the logits with probabilities: every call starts from logits
    logits.fill(0.1f);
    state.ResumeTiming();
    CrossEntropySaved saved;
    benchmark::DoNotOptimize(cross_entropy_forward(saved, logits, targets, "ce"));
  }
  report(state, cross_entropy_forward_count(N, V, dtype));
  state.SetLabel(dtype_name(dtype));
}
BENCHMARK(BM_cross_entropy_forward)->ArgName("bf16")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_cross_entropy_backward(benchmark::State& state) {
  const DType dtype = logits_dtype(state);
  Tensor logits = Tensor::empty({N, V}, Category::temporary, "z", dtype);
  Tensor targets = Tensor::zeros({B, T}, Category::temporary, "t", DType::i32);
  for (auto _ : state) {
    state.PauseTiming();
    logits.fill(0.1f);
    CrossEntropySaved saved;
    cross_entropy_forward(saved, logits, targets, "ce");
    state.ResumeTiming();
    benchmark::DoNotOptimize(cross_entropy_backward(saved, 1.0f, 0).raw_data());
  }
  report(state, cross_entropy_backward_count(N, V, dtype));
  state.SetLabel(dtype_name(dtype));
}
BENCHMARK(BM_cross_entropy_backward)->ArgName("bf16")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
