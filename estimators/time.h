// Time models: accelerator specs in one table, training time from counted FLOPs and from the 6·N rule at a
// given MFU, and a roofline step-time predictor (per op: max(FLOPs / peak, bytes / bandwidth)).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "model/precision.h"
#include "runtime/counters.h"

namespace reckon {

struct GpuSpec {
  std::string name;  // "a100-80gb"
  std::string description;
  double fp32_tflops;  // dense, no tensor cores
  double tf32_tflops;  // dense tensor-core TF32
  double bf16_tflops;  // dense tensor-core BF16
  double hbm_tbps;     // TB/s = 10¹² B/s
  int64_t memory_bytes;
  std::string nvlink;      // "NVLink 3"
  double nvlink_gbps;      // GB/s per GPU per direction (data sheet's total / 2)
  double infiniband_gbps;  // GB/s per GPU: one HCA per GPU, as in DGX systems
  std::string infiniband;  // "HDR 200 Gb/s"
  int64_t sms = 0;         // streaming multiprocessors (NVIDIA) / compute units (AMD): the waves of a GEMM
};

const std::vector<GpuSpec>& gpu_specs();
// Throws std::invalid_argument naming --gpu and the allowed names.
const GpuSpec& gpu_spec(std::string_view name);
// precision: fp32 | tf32 | bf16. Throws std::invalid_argument naming --precision.
double gpu_peak_flops(const GpuSpec& gpu, std::string_view precision);
// The GPU math a training precision runs its matmuls in: fp32 → "fp32", amp-bf16 and bf16 → "bf16".
const char* gpu_math_for(Precision precision);

struct TrainingTime {
  double tokens;
  double counted_flops;  // our per-step count (fwd + bwd + AdamW) × steps
  double six_n_flops;    // 6 · N · tokens
  double counted_days;
  double six_n_days;
};
TrainingTime training_time(double step_flops_at_train_batch, int64_t num_parameters, int64_t train_steps,
                           int64_t train_batch, int64_t context_length, double peak_flops, double mfu);

// A link for the alpha-beta model of ring collectives: α per ring step (latency), β bytes per second per
// direction per rank.
struct Link {
  std::string name;
  double alpha_seconds;
  double bytes_per_second;
  std::string source;  // where the figures come from
};
// The link a data-parallel group of `gpus` GPUs rings over: "nvlink" (one node), "infiniband" (across nodes, the
// slower hop bounds the ring) or "auto" (nvlink up to 8 GPUs, else infiniband). α: 2 µs (NVLink) / 5 µs
// (InfiniBand) per ring step, assumed (the order of NCCL-tests' small-message latencies); β: data-sheet peak.
// Throws std::invalid_argument naming --link.
Link gpu_link(const GpuSpec& gpu, int64_t gpus, std::string_view which);
// Ring algorithms on `ranks` ranks, S = the collective's buffer (all_reduce: the buffer; reduce_scatter: the
// whole input; all_gather: the whole output): all_reduce 2(N−1) steps of S/N, reduce_scatter and all_gather N−1;
// broadcast (pipelined) S/β + (N−1)α. Each rank sends `wire_bytes` = 2(N−1)/N·S, (N−1)/N·S, S.
struct CollectiveTime {
  double seconds = 0;
  double wire_bytes = 0;  // sent per rank
};
// `calls` calls moving `bytes` in total (the model is linear in S: the sum over calls is exact).
CollectiveTime collective_time(std::string_view op, double bytes, int64_t calls, int64_t ranks, const Link& link);
// The buffer bytes of op `op` as runtime/comm records it (bytes_read, or bytes_written for all_gather).
double collective_buffer_bytes(std::string_view op, const OpCount& count);
// Σ over the communication-phase ops of `counts` (estimators/flops.h estimate_step_counts with ranks).
CollectiveTime communication_time(const std::map<OpKey, OpCount>& counts, int64_t ranks, const Link& link);
// The same traffic in the ZeRO paper's unit: elements each rank sends per step / Ψ (num_parameters), reductions
// counted in float32 elements, gathers in the parameter dtype's (`parameter_bytes`). The paper's rules are 2Ψ
// (stages 0, 1, 2) and 3Ψ (stage 3), their large-N limits.
double communication_psi(const std::map<OpKey, OpCount>& counts, int64_t ranks, int64_t parameter_bytes,
                         int64_t num_parameters);

// A machine for the roofline: peak FLOP/s (matmul), elementwise FLOP/s, memory bandwidth (B/s).
struct Roofline {
  std::string name;
  double matmul_flops;  // e.g. measured sgemm rate, or a GPU's tensor-core peak
  double other_flops;   // non-matmul arithmetic
  double bytes_per_second;
};
struct RooflineRow {
  OpKey key;
  double seconds;
  bool memory_bound;
};
// Per op × phase: max(matmul/matmul_peak + other/other_peak, bytes / bandwidth); sorted as the map.
// With `matmul_seconds` (per op × phase: the step's own matmul calls, each timed alone at its exact shape),
// those seconds replace matmul/matmul_peak for the ops they list: a measured ceiling per shape instead of
// one rate for all.
std::vector<RooflineRow> roofline_step(const std::map<OpKey, OpCount>& counts, const Roofline& machine,
                                       const std::map<OpKey, double>* matmul_seconds = nullptr);
double roofline_total(const std::vector<RooflineRow>& rows);

}  // namespace reckon
