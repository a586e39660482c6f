// AdamW throughput against its memory roof, measured in the same binary over the same arrays:
//   adamw_fused      reckon's AdamW::step() (one OpenMP + SIMD pass, the production path)
//   adamw_reference  the plain scalar loop (one thread), the baseline it must agree with bit for bit
//   adamw_roof       a memory-only kernel with AdamW's exact access pattern (read p, g, m, v; write p, m, v;
//                    next to no arithmetic): the physical limit
//   adamw_master     the mixed-precision master-weights update (read g (bf16 or f32), master, m, v; write
//                    master, m, v and the bf16 param), in 64 K-element chunks over the threads
//   adamw_master_roof the same access pattern with next to no arithmetic: its roof
//   stream_copy / stream_triad for context (their own byte conventions: copy 8 B, triad 12 B per element).
// Rates use 28 B per parameter for the AdamW rows. Run:
//   OMP_NUM_THREADS=2 build/bench_adamw --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"
#include <omp.h>

#include <algorithm>
#include <vector>

#include "optim/adamw.h"
#include "runtime/machine.h"

namespace {

using namespace reckon;

struct Setup {
  std::vector<Parameter> params;
  AdamW opt;
  explicit Setup(int64_t n)
      : params{Parameter{"p", Tensor::empty({n}, Category::parameter, "p"),
                         Tensor::empty({n}, Category::gradient, "p.grad")}},
        opt(params, AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01}) {
    float* p = params[0].value.data();
    float* g = params[0].grad.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = 1.0f, g[i] = 1e-3f;
    opt.step();  // allocates (and first-touches) m and v
  }
  float* p() { return params[0].value.data(); }
  float* g() { return params[0].grad.data(); }
  float* m() { return opt.exp_avg(0).data(); }
  float* v() { return opt.exp_avg_sq(0).data(); }
};

void rates(benchmark::State& state, int64_t n, double bytes_per_element) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes_per_element * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["Gparam/s"] = benchmark::Counter(n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_adamw_fused(benchmark::State& state) {
  const int64_t n = state.range(0);
  Setup s(n);
  for (auto _ : state) s.opt.step();
  rates(state, n, 28);
}

void BM_adamw_reference(benchmark::State& state) {
  const int64_t n = state.range(0);
  Setup s(n);
  float *p = s.p(), *g = s.g(), *m = s.m(), *v = s.v();
  int64_t step = 1;
  for (auto _ : state) adamw_update_reference(p, m, v, g, n, adamw_step_constants(s.opt.config(), ++step));
  rates(state, n, 28);
}

void BM_adamw_roof(benchmark::State& state) {
  const int64_t n = state.range(0);
  Setup s(n);
  float *p = s.p(), *g = s.g(), *m = s.m(), *v = s.v();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      p[i] = p[i] + 1e-30f * gi;
      m[i] = m[i] + 1e-30f * gi;
      v[i] = v[i] + 1e-30f * gi;
    }
    benchmark::ClobberMemory();
  }
  rates(state, n, 28);
}

// Arrays of the master-weights update: float32 master, m, v; bf16 param; gradient in `grad_dtype`.
struct MasterSetup {
  Tensor master, m, v, param, grad;
  MasterSetup(int64_t n, DType grad_dtype)
      : master(Tensor::empty({n}, Category::optimizer_state, "p.master")),
        m(Tensor::zeros({n}, Category::optimizer_state, "p.exp_avg")),
        v(Tensor::zeros({n}, Category::optimizer_state, "p.exp_avg_sq")),
        param(Tensor::zeros({n}, Category::parameter, "p", DType::bf16)),
        grad(Tensor::empty({n}, Category::gradient, "p.grad", grad_dtype)) {
    master.fill(1.0f);  // first touch, in the threads' static partition as below
    grad.fill(1e-3f);
  }
};
constexpr int64_t kMasterChunk = 1 << 16;

void BM_adamw_master(benchmark::State& state) {
  const int64_t n = state.range(0);
  const DType grad_dtype = state.range(1) == 16 ? DType::bf16 : DType::f32;
  MasterSetup a(n, grad_dtype);
  const AdamWConfig config{1e-3, 0.9, 0.999, 1e-8, 0.01};
  int64_t step = 0;
  for (auto _ : state) {
    const AdamWStep s = adamw_step_constants(config, ++step);
#pragma omp parallel for schedule(static)
    for (int64_t begin = 0; begin < n; begin += kMasterChunk) {
      const int64_t len = std::min(kMasterChunk, n - begin);
      if (grad_dtype == DType::bf16) {
        adamw_update_master_fused(a.master.data() + begin, a.m.data() + begin, a.v.data() + begin,
                                  a.grad.data_bf16() + begin, a.param.data_bf16() + begin, len, s);
      } else {
        adamw_update_master_fused(a.master.data() + begin, a.m.data() + begin, a.v.data() + begin,
                                  a.grad.data() + begin, a.param.data_bf16() + begin, len, s);
      }
    }
  }
  const OpCount c = adamw_master_count(1, config, grad_dtype);
  rates(state, n, static_cast<double>(c.bytes_read + c.bytes_written));
}

// The roof of the bf16-gradient pattern: read g (2 B), master, m, v; write master, m, v, param (2 B).
void BM_adamw_master_roof(benchmark::State& state) {
  const int64_t n = state.range(0);
  MasterSetup a(n, DType::bf16);
  float *master = a.master.data(), *m = a.m.data(), *v = a.v.data();
  const uint16_t* g = &a.grad.data_bf16()->bits;
  uint16_t* param = &a.param.data_bf16()->bits;
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = static_cast<float>(g[i]);
      master[i] = master[i] + 1e-30f * gi;
      m[i] = m[i] + 1e-30f * gi;
      v[i] = v[i] + 1e-30f * gi;
      param[i] = static_cast<uint16_t>(g[i] + 1);
    }
    benchmark::ClobberMemory();
  }
  rates(state, n, 28);
}

void BM_stream_copy(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = Tensor::zeros({n}, Category::temporary, "a"), c = Tensor::zeros({n}, Category::temporary, "c");
  float *pa = a.data(), *pc = c.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) pc[i] = pa[i];
    benchmark::ClobberMemory();
  }
  rates(state, n, 8);
}

void BM_stream_triad(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a = Tensor::zeros({n}, Category::temporary, "a"), b = Tensor::zeros({n}, Category::temporary, "b");
  Tensor c = Tensor::zeros({n}, Category::temporary, "c");
  float *pa = a.data(), *pb = b.data(), *pc = c.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    benchmark::ClobberMemory();
  }
  rates(state, n, 12);
}

const std::vector<int64_t> kSizes = {1 << 20, 16 << 20, 64 << 20, 256 << 20};
BENCHMARK(BM_adamw_fused)->ArgName("params")->ArgsProduct({kSizes})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_roof)->ArgName("params")->ArgsProduct({kSizes})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_master)
    ->ArgNames({"params", "grad_bits"})
    ->ArgsProduct({kSizes, {16, 32}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_master_roof)->ArgName("params")->ArgsProduct({kSizes})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_reference)->ArgName("params")->Arg(16 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_stream_copy)->ArgName("elements")->Arg(64 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_stream_triad)->ArgName("elements")->Arg(64 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
