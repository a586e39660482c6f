// Attention and recompute, in one binary and one run so every ratio compares like with like:
//   BM_attention_core    forward + backward of the attention core alone, naive vs flash, S's heads (D 512, H 8,
//                        d_k 64) at T = 64 … 4096 with B·T = 2048 tokens (B = 1 from T = 2048 on), and flash
//                        with 2 and 1 K/V heads (groups of 4 and 8) at T = 2048, and flash at T = 4096 with sliding
//                        windows of 512 and 1024 keys and with scores soft-capped at 50 (Gemma-2's) at T = 2048;
//                        GFLOP/s on the FLOPs each executes and on the causal model FLOPs (the pairs the mask keeps;
//                        the same for both kernels);
//   BM_step              the whole S training step (L 4, D 512, d_ff 2048, V 8192, fp32) at the same shapes, per
//                        attention × recompute: tokens/s, attention's share of the op time, the step's peak
//                        bytes (tracking allocator) and the predicted recompute overhead (executed FLOPs over
//                        recompute = none's) beside the measured one (the ratio of two rows' times).
// Run:
//   OMP_NUM_THREADS=2 build/bench_attention --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_main.h"

#include <algorithm>
#include <string>

#include <fmt/format.h>

#include "estimators/flops.h"
#include "model/data.h"
#include "ops/attention.h"
#include "ops/flash_attention.h"
#include "optim/step.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"
#include "runtime/kernel_isa.h"
#include "runtime/matmul.h"

namespace {

using namespace reckon;

constexpr int64_t kD = 512, kH = 8, kTokens = 2048;

Tensor filled(const Shape& shape, const char* name, uint32_t seed) {
  Tensor t = Tensor::empty(shape, Category::temporary, name);
  uint32_t x = seed;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 1664525u + 1013904223u;
    t.data()[i] = static_cast<float>(x >> 8) / 16777216.0f - 0.5f;
  }
  return t;
}

Tensor in_dtype(const Tensor& x, DType dtype) {
  if (dtype == DType::f32) return x;
  Tensor out = Tensor::empty(x.shape(), Category::temporary, "bf16", DType::bf16);
  convert_to_bf16(out.data_bf16(), x.data(), x.numel());
  return out;
}

// flash: 0 naive, 1 flash; T; kv: key/value heads (8 = multi-head; 2 and 1: groups of 4 and 8 query heads); window:
// sliding window (0 = none); cap: score soft-capping (0 = none); bf16: 0 float32 storage, 1 bf16; isa: flash's
// kernels (runtime/kernel_isa.h) 0 reference, 1 avx512 (float32 tiles; bf16 widened), 2 avx512_bf16 (VDPBF16PS),
// 3 amx — rows above this CPU's level are skipped; naive runs oneDNN's matmuls whatever the row says.
void BM_attention_core(benchmark::State& state) {
  const bool flash = state.range(0) != 0;
  const int64_t t = state.range(1), b = std::max<int64_t>(1, kTokens / t), kv = state.range(2);
  const AttentionScores scores{state.range(3), static_cast<float>(state.range(4))};
  const DType dtype = state.range(5) == 0 ? DType::f32 : DType::bf16;
  const KernelIsa isa = static_cast<KernelIsa>(state.range(6));
  if (static_cast<int>(isa) > static_cast<int>(kernel_isa_best())) {
    state.SkipWithError(fmt::format("this CPU's kernels stop at {}", kernel_isa_name(kernel_isa_best())).c_str());
    return;
  }
  const ScopedKernelIsa kernels(isa);
  const int64_t dk = kD / kH, kv_width = kv * dk;
  Tensor q = in_dtype(filled({b, t, kD}, "q", 1), dtype), k = in_dtype(filled({b, t, kv_width}, "k", 2), dtype),
         v = in_dtype(filled({b, t, kv_width}, "v", 3), dtype);
  Tensor dout = in_dtype(filled({b, t, kD}, "dout", 4), dtype);
  Tensor dq = Tensor::empty({b, t, kD}, Category::temporary, "dq", dtype),
         dk_ = Tensor::empty({b, t, kv_width}, Category::temporary, "dk", dtype),
         dv = Tensor::empty({b, t, kv_width}, Category::temporary, "dv", dtype);
  for (auto _ : state) {
    if (flash) {
      FlashAttentionSaved saved;
      Tensor out = flash_attention_forward(saved, q, k, v, kH, kv, "attn", scores);
      flash_attention_backward(dq, dk_, dv, dout, saved);
    } else {
      AttentionSaved saved;
      Tensor out = attention_forward(saved, q, k, v, kH, kv, "attn", scores);
      attention_backward(dq, dk_, dv, dout, saved);
    }
    benchmark::DoNotOptimize(dq.raw_data());
  }
  const AttentionShape shape{b, t, kH, kv, dk, scores.window, scores.softcap};
  const OpCount f = flash ? flash_attention_forward_count(shape) : attention_forward_count(shape);
  const OpCount g = flash ? flash_attention_backward_count(shape) : attention_backward_count(shape);
  // Model FLOPs of the core, causal convention: 12·d_k per score entry the mask keeps.
  const double model = 12.0 * dk * static_cast<double>(shape.visible()) * b * kH;
  state.SetLabel(fmt::format("{} {} B={} T={} {}{}{}",
                             flash ? fmt::format("flash ({})", kernel_isa_name(isa)) : "naive", dtype_name(dtype), b, t,
                             kv == kH  ? std::string("MHA")
                             : kv == 1 ? std::string("MQA")
                                       : fmt::format("GQA {}", kv),
                             scores.window > 0 ? fmt::format(" W={}", scores.window) : "",
                             scores.softcap > 0 ? fmt::format(" cap={}", scores.softcap) : ""));
  state.counters["GFLOP/s_executed"] = benchmark::Counter(static_cast<double>(f.flops() + g.flops()) * 1e-9,
                                                          benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s_model_causal"] =
      benchmark::Counter(model * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_attention_core)
    ->ArgNames({"flash", "T", "kv", "window", "cap", "bf16", "isa"})
    ->ArgsProduct({{0}, {64, 128, 256, 512, 1024, 2048, 4096}, {kH}, {0}, {0}, {0, 1}, {0}})
    ->ArgsProduct({{1}, {64, 128, 256, 512, 1024, 2048, 4096}, {kH}, {0}, {0}, {0}, {0, 1}})
    ->ArgsProduct({{1}, {64, 128, 256, 512, 1024, 2048, 4096}, {kH}, {0}, {0}, {1}, {0, 1, 2, 3}})
    ->ArgsProduct({{1}, {2048}, {2, 1}, {0}, {0}, {0}, {0, 1}})
    ->ArgsProduct({{1}, {4096}, {kH}, {512, 1024}, {0}, {0}, {0, 1}})
    ->ArgsProduct({{1}, {2048}, {kH}, {0}, {50}, {0}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The rate the bf16 attention core is held to: oneDNN's bf16 matmul (f32 accumulate and output) at config S's
// ffn shape, 2048 × 2048 × 512, in the same binary and run.
void BM_onednn_bf16_matmul(benchmark::State& state) {
  Tensor x = Tensor::zeros({2048, 512}, Category::temporary, "x", DType::bf16);
  Tensor w = Tensor::zeros({2048, 512}, Category::temporary, "w", DType::bf16);
  Tensor y = Tensor::zeros({2048, 2048}, Category::temporary, "y");
  x.fill(0.5f), w.fill(0.25f);
  const Tensor wt = w.transpose(0, 1);
  for (int i = 0; i < 3; ++i) matmul(y, x, wt);
  for (auto _ : state) {
    matmul(y, x, wt);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(matmul_impl_name(matmul_geometry(y, x, wt, 1.0f, false)));
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 2048 * 2048 * 512 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_onednn_bf16_matmul)->UseRealTime()->Unit(benchmark::kMillisecond);

// flash: 0 naive, 1 flash; recompute: 0 none, 1 attention, 2 full; T.
void BM_step(benchmark::State& state) {
  TrainConfig config = preset_config("S");
  config.model.attention = state.range(0) != 0 ? AttentionKind::flash : AttentionKind::naive;
  config.model.recompute = static_cast<Recompute>(state.range(1));
  config.model.context_length = state.range(2);
  config.model.batch_size = std::max<int64_t>(1, kTokens / state.range(2));
  validate(config);
  const ModelConfig& m = config.model;
  TrainingSession run(config);
  TokenData data = TokenData::random(m.vocab_size, 1);
  data.fill_batch(run.tokens, run.targets, 0);
  run.warm_up();
  counters().reset();
  tracker().reset_peak_stats();
  for (auto _ : state) benchmark::DoNotOptimize(run.step());
  double all = 0, attention = 0;
  for (const auto& [key, c] : counters().by_op()) {
    all += c.seconds;
    if (key.op == "attention") attention += c.seconds;
  }
  ModelConfig none = m;
  none.recompute = Recompute::none;
  const UtilizationFlops u = utilization_flops(m, config.optim), u_none = utilization_flops(none, config.optim);
  state.SetLabel(fmt::format("S {} recompute {} B={} T={}", attention_name(m.attention), recompute_name(m.recompute),
                             m.batch_size, m.context_length));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(m.batch_size * m.context_length),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["attention_%"] = all > 0 ? 100.0 * attention / all : 0.0;
  state.counters["peak_MB"] = static_cast<double>(tracker().stats().total.allocated_bytes.peak) * 1e-6;
  state.counters["predicted_overhead"] = static_cast<double>(u.hardware) / static_cast<double>(u_none.hardware);
}
BENCHMARK(BM_step)
    ->ArgNames({"flash", "recompute", "T"})
    ->ArgsProduct({{0, 1}, {0}, {64, 128, 256, 512, 1024, 2048, 4096}})
    ->ArgsProduct({{0, 1}, {1, 2}, {256, 2048}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) { return reckon_bench_main(argc, argv); }
