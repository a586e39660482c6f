// A training step's time on a GPU, predicted op by op from reckon's exact counts (estimators/flops.h
// estimate_step_counts: FLOPs and bytes per op × phase; estimators/memory.h step_matmuls: every matmul's shape) and
// kernel-level published constants only (GEMM, attention, bandwidth and collective benchmarks, each cited in
// gpu_step.cpp and docs/conventions.md). Nothing here is fitted to an end-to-end training run: those are the check
// (docs/gpu_time.md). The rules:
//   matmul         each call at its exact shape: cuBLAS-like output tiles (256×128, 128×256, 128×128, the guide's
//                  most efficient), batch·⌈M/Tm⌉·⌈N/Tn⌉ CTAs run in waves of one CTA per SM; a wave takes a tile's
//                  2·Tm·Tn·K FLOPs at one SM's share of the peak × η_gemm (the GPU's best-shape MAMF / peak); the
//                  tile with the least time (cuBLAS's heuristic picks well); never below its operand bytes at HBM.
//   attention      flash in bf16: FlashAttention's FLOPs (4·d·B·H·pairs forward, 2.5× backward) at the published
//                  FlashAttention-2 rate for its pass, head dim and sequence length (causal); otherwise its
//                  matmuls as above and its softmax's traffic as a memory-bound op.
//   memory-bound   bytes / (HBM peak × η_hbm × a size factor), or non-matmul FLOPs at the FP32 peak if slower.
//   launch         every kernel takes at least kLaunchSeconds: one kernel per reckon op call (the fused kernels of
//                  the stacks that publish training runs: Apex / Transformer Engine / torch.compile).
//   communication  NCCL's ring (estimators/time.h collective_time) at the link's measured bus-bandwidth fraction,
//                  overlapped as FSDP's prefetch and DDP's bucketed backward do: unit u's collectives hide behind
//                  unit u − 1's compute (forward: layer order; backward: reverse), so only
//                  c_first + Σ max(0, c_u − k_{u−1}) is exposed (exposed_communication).
//   step           Σ op times + exposed communication.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "estimators/time.h"
#include "model/config.h"
#include "optim/adamw.h"

namespace reckon {

constexpr double kLaunchSeconds = 5e-6;

// Kernel-level constants of one GPU (sources in gpu_step.cpp).
struct GpuKernels {
  double gemm_efficiency;     // best-shape matmul FLOP/s ÷ the dense bf16 peak (MAMF)
  double hbm_efficiency;      // a large streaming kernel's bytes/s ÷ the HBM peak
  double nvlink_efficiency;   // NCCL ring bus bandwidth ÷ the link's peak, in a node
  double network_efficiency;  // … across nodes (InfiniBand / RoCE per GPU)
  double attention_scale;     // FlashAttention-2's rate here ÷ its A100 rate at the same point
  std::string source;         // which of these are measured on this GPU, which assumed from another
};
const GpuKernels& gpu_kernels(const GpuSpec& gpu);

// One matmul call's time: the tile that won, its CTAs and waves, what bounds it.
struct GemmTime {
  double seconds = 0;
  int64_t tile_m = 0, tile_n = 0, ctas = 0, waves = 0;
  bool memory_bound = false;
};
GemmTime gemm_time(int64_t batch, int64_t m, int64_t n, int64_t k, double operand_bytes, const GpuSpec& gpu,
                   double peak_flops);

// `kernels` memory-bound kernels moving `bytes` in all (and doing `flops` of non-matmul arithmetic): bytes / (HBM ×
// η_hbm × size factor) or flops / FP32 peak, whichever is longer. The size factor is Calculon's memory efficiency
// curve relative to its large-transfer value, at one kernel's share of the bytes: 1 from 100 MB, 0.75/0.9 from 10 MB,
// 0.6/0.9 from 1 MB, 0.3/0.9 below.
double memory_bound_seconds(double bytes, double flops, const GpuSpec& gpu, int64_t kernels = 1);

// FlashAttention-2's rate (FLOP/s, its own FLOP convention) on `gpu` for a pass ("forward" / "backward"), causal
// masking, head dim and sequence length: the published A100 table interpolated in log T and in head dim (clamped to
// its range: 64–128, 512–16k), times the GPU's attention_scale.
double flash_attention_rate(const GpuSpec& gpu, bool backward, bool causal, int64_t head_dim, int64_t seq_len);

// The overlap rule: `comm[u]` the collectives of unit u, `compute[u]` its compute, in execution order. Unit u's
// collectives are issued while unit u − 1 computes, so c_0 + Σ_{u≥1} max(0, c_u − k_{u−1}) is exposed.
double exposed_communication(const std::vector<double>& comm, const std::vector<double>& compute);

struct GpuOpTime {
  OpKey key;
  double seconds = 0;
  std::string bound;  // compute | memory | launch | link
  double flops = 0, bytes = 0;
  int64_t kernels = 0;
};

struct GpuStep {
  std::string gpu;             // the spec's name
  std::vector<GpuOpTime> ops;  // per op × phase, the map's order; communication ops with their full time
  double compute_seconds = 0;
  double communication_seconds = 0;  // every collective's time
  double exposed_communication_seconds = 0;
  double seconds = 0;  // compute + exposed communication
  double tokens_per_second_per_gpu = 0;
  double mfu_causal = 0, mfu_full = 0, hfu = 0;  // against the precision's dense peak
  double peak_flops = 0;
  double roofline_seconds =
      0;  // Σ over ops of max(FLOPs / peak, bytes / HBM peak): the floor the prediction stays above
};

// The step of `config` (batch_size: the micro-batch per GPU, gradient_accumulation_steps of them a step) on `gpu`, data
// parallel over `ranks` GPUs on `link` (zero_stage from the config), its matmuls at the `gpu_math` peak ("fp32",
// "tf32", "bf16"; empty: the precision's, estimators/time.h gpu_math_for).
GpuStep predict_gpu_step(const ModelConfig& config, const AdamWConfig& optim, const GpuSpec& gpu, int64_t ranks,
                         const Link& link, std::string_view gpu_math = {});

}  // namespace reckon
