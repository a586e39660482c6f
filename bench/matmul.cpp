// Matmul throughput: reckon's cached oneDNN wrapper at several shapes vs an FMA-peak loop measured in the
// same binary and run. Run: build/bench_matmul --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Rates use real (wall) time: oneDNN and OpenMP work on several threads.
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"
#include <omp.h>

#include <cstdint>

#include <fmt/format.h>

#include "runtime/machine.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace {

using reckon::Category;
using reckon::Tensor;

// y (M, N) = x (M, K) · wᵀ with w stored (N, K), the linear-layer layout; x and w in `dtype`, y float32.
void run_matmul(benchmark::State& state, reckon::DType dtype) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor x = Tensor::zeros({m, k}, Category::temporary, "x", dtype);
  Tensor w = Tensor::zeros({n, k}, Category::temporary, "w", dtype);
  Tensor y = Tensor::zeros({m, n}, Category::temporary, "y");
  x.fill(0.5f);
  w.fill(0.25f);
  Tensor wt = w.transpose(0, 1);
  for (int i = 0; i < 3; ++i) reckon::matmul(y, x, wt);  // create the primitive, warm up
  for (auto _ : state) {
    reckon::matmul(y, x, wt);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP"] = benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = omp_get_max_threads();
  state.SetLabel(reckon::matmul_impl_name(reckon::matmul_geometry(y, x, wt, 1.0f, false)));
}
void BM_matmul(benchmark::State& state) { run_matmul(state, reckon::DType::f32); }
// The same shapes with bf16 operands (f32 accumulate and output): the ratio to BM_matmul is the bf16 gain on
// this CPU (AMX on Sapphire Rapids, AVX512-BF16 dot products on Zen 4).
void BM_matmul_bf16(benchmark::State& state) { run_matmul(state, reckon::DType::bf16); }
void matmul_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"});
  b->Args({256, 256, 256});
  b->Args({2048, 2048, 2048});
  b->Args({2048, 512, 512});   // config S: attention projection
  b->Args({2048, 2048, 512});  // config S: ffn w1
  b->Args({2048, 8192, 512});  // config S: lm head
}
BENCHMARK(BM_matmul)->Apply(matmul_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_matmul_bf16)->Apply(matmul_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

// FMA peak: the runtime's probe (independent FMA chains on 16-lane vectors in every thread, no memory).
// nn.Linear's bias, two ways at the S shapes (float32): mode 0 no bias (the floor), 1 oneDNN's bias argument
// (reckon's), 2 the matmul then a separate pass adding the bias to every row.
void BM_linear_bias(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2), mode = state.range(3);
  Tensor x = Tensor::zeros({m, k}, Category::temporary, "x"), w = Tensor::zeros({n, k}, Category::temporary, "w");
  Tensor y = Tensor::zeros({m, n}, Category::temporary, "y"), bias = Tensor::zeros({n}, Category::temporary, "b");
  x.fill(0.5f), w.fill(0.25f), bias.fill(0.125f);
  const Tensor wt = w.transpose(0, 1);
  auto run = [&] {
    reckon::matmul(y, x, wt, "matmul", 1.0f, false, mode == 1 ? bias : Tensor());
    if (mode == 2) {
      float* py = y.data();
      const float* pb = bias.data();
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < m; ++r)
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) py[r * n + c] += pb[c];
    }
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(mode == 0 ? "no bias" : mode == 1 ? "oneDNN bias argument" : "matmul + separate add");
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(m) * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_linear_bias)
    ->ArgNames({"M", "N", "K", "mode"})
    ->ArgsProduct({{2048}, {512, 2048}, {512}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A linear layer's backward products with bf16 operands, as the mixed-precision step runs them, by destination:
// dst 0 bf16, overwritten (the step floor's convention); 1 float32, overwritten; 2 float32, accumulated (dW += …
// into float32 master gradients, dX += … where one input feeds several projections). part 0: dX (N×IN) = dY·W;
// part 1: dW (OUT×IN) = dYᵀ·X, dY read transposed as linear_backward does.
void BM_linear_backward_bf16(benchmark::State& state) {
  const int64_t tokens = state.range(0), in = state.range(1), out = state.range(2), part = state.range(3),
                dst = state.range(4);
  const reckon::DType bf16 = reckon::DType::bf16, dst_dtype = dst == 0 ? bf16 : reckon::DType::f32;
  Tensor x = Tensor::zeros({tokens, in}, Category::temporary, "x", bf16);
  Tensor w = Tensor::zeros({out, in}, Category::temporary, "w", bf16);
  Tensor gy = Tensor::zeros({tokens, out}, Category::temporary, "gy", bf16);
  x.fill(0.5f), w.fill(0.25f), gy.fill(0.125f);
  Tensor y = part == 0 ? Tensor::zeros({tokens, in}, Category::temporary, "gx", dst_dtype)
                       : Tensor::zeros({out, in}, Category::temporary, "gw", dst_dtype);
  const bool accumulate = dst == 2;
  auto run = [&] {
    if (part == 0)
      reckon::matmul(y, gy, w, "matmul", 1.0f, accumulate);
    else
      reckon::matmul(y, gy.transpose(0, 1), x, "matmul", 1.0f, accumulate);
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(y.raw_data());
  }
  const Tensor a = part == 0 ? gy : gy.transpose(0, 1), b = part == 0 ? w : x;
  state.SetLabel(fmt::format("{} {} {}", part == 0 ? "dX" : "dW",
                             dst == 0   ? "bf16 ="
                             : dst == 1 ? "f32 ="
                                        : "f32 +=",
                             reckon::matmul_impl_name(reckon::matmul_geometry(y, a, b, 1.0f, accumulate))));
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(tokens) * in * out * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_linear_backward_bf16)
    ->ArgNames({"tokens", "in", "out", "part", "dst"})
    ->ArgsProduct({{2048}, {512}, {512, 2048}, {0, 1}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_fma_peak(benchmark::State& state) {
  const int64_t iters = 1 << 20;
  int64_t flops = 0;
  for (auto _ : state) flops = reckon::fma_peak_kernel(iters);
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = omp_get_max_threads();
}
BENCHMARK(BM_fma_peak)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
