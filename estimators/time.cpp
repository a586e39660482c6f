#include "estimators/time.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

const std::vector<GpuSpec>& gpu_specs() {
  // NVIDIA data sheets (dense numbers; "80GB" / "40GB" cards have 80 / 40 GiB of HBM).
  static const std::vector<GpuSpec> specs = {
      {"a100-40gb", "NVIDIA A100 40GB (SXM)", 19.5, 156.0, 312.0, 1.555, 40LL << 30},
      {"a100-80gb", "NVIDIA A100 80GB (SXM)", 19.5, 156.0, 312.0, 2.039, 80LL << 30},
      {"h100-sxm", "NVIDIA H100 SXM 80GB", 67.0, 494.7, 989.4, 3.35, 80LL << 30},
  };
  return specs;
}

const GpuSpec& gpu_spec(std::string_view name) {
  for (const GpuSpec& g : gpu_specs()) {
    if (g.name == name) return g;
  }
  throw std::invalid_argument(fmt::format("--gpu: '{}' is not a known GPU; allowed values are a100-40gb, a100-80gb, h100-sxm", name));
}

double gpu_peak_flops(const GpuSpec& gpu, std::string_view precision) {
  if (precision == "fp32") return gpu.fp32_tflops * 1e12;
  if (precision == "tf32") return gpu.tf32_tflops * 1e12;
  if (precision == "bf16") return gpu.bf16_tflops * 1e12;
  throw std::invalid_argument(fmt::format("--precision: '{}' is not allowed; allowed values are fp32, tf32, bf16", precision));
}

TrainingTime training_time(double step_flops, int64_t num_parameters, int64_t train_steps, int64_t train_batch,
                           int64_t context_length, double peak_flops, double mfu) {
  TrainingTime t;
  t.tokens = static_cast<double>(train_steps) * static_cast<double>(train_batch) * static_cast<double>(context_length);
  t.counted_flops = step_flops * static_cast<double>(train_steps);
  t.six_n_flops = 6.0 * static_cast<double>(num_parameters) * t.tokens;
  const double rate = peak_flops * mfu;
  t.counted_days = t.counted_flops / rate / 86400.0;
  t.six_n_days = t.six_n_flops / rate / 86400.0;
  return t;
}

std::vector<RooflineRow> roofline_step(const std::map<OpKey, OpCount>& counts, const Roofline& m,
                                       const std::map<OpKey, double>* matmul_seconds) {
  std::vector<RooflineRow> rows;
  for (const auto& [key, c] : counts) {
    double matmul = static_cast<double>(c.matmul_flops) / m.matmul_flops;
    if (matmul_seconds != nullptr) {
      const auto it = matmul_seconds->find(key);
      if (it != matmul_seconds->end()) matmul = it->second;
    }
    const double compute = matmul + static_cast<double>(c.other_flops) / m.other_flops;
    const double memory = static_cast<double>(c.bytes_read + c.bytes_written) / m.bytes_per_second;
    rows.push_back({key, std::max(compute, memory), memory > compute});
  }
  return rows;
}

double roofline_total(const std::vector<RooflineRow>& rows) {
  double s = 0;
  for (const RooflineRow& r : rows) s += r.seconds;
  return s;
}

const char* gpu_math_for(Precision precision) { return precision == Precision::fp32 ? "fp32" : "bf16"; }

}  // namespace reckon
