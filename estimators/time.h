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
  std::string name;          // "a100-80gb"
  std::string description;
  double fp32_tflops;        // dense, no tensor cores
  double tf32_tflops;        // dense tensor-core TF32
  double bf16_tflops;        // dense tensor-core BF16
  double hbm_tbps;           // TB/s = 10¹² B/s
  int64_t memory_bytes;
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
  double counted_flops;   // our per-step count (fwd + bwd + AdamW) × steps
  double six_n_flops;     // 6 · N · tokens
  double counted_days;
  double six_n_days;
};
TrainingTime training_time(double step_flops_at_train_batch, int64_t num_parameters, int64_t train_steps,
                           int64_t train_batch, int64_t context_length, double peak_flops, double mfu);

// A machine for the roofline: peak FLOP/s (matmul), elementwise FLOP/s, memory bandwidth (B/s).
struct Roofline {
  std::string name;
  double matmul_flops;      // e.g. measured sgemm rate, or a GPU's tensor-core peak
  double other_flops;       // non-matmul arithmetic
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
