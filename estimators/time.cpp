#include "estimators/time.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

namespace reckon {

const std::vector<GpuSpec>& gpu_specs() {
  // Data sheets, dense (no sparsity): nvidia.com/data-center/a100, /h100, /h200, the DGX B200 data sheet,
  // amd.com MI300X; SM counts and clocks as ml-engineering's compute/accelerator/README.md tabulates them. The
  // A100 "80GB" / "40GB" cards have 80 / 40 GiB; H200's 141 GB, B200's 180 GB and MI300X's 192 GB are decimal.
  // Links: NVLink 600 GB/s (A100) / 900 (H100, H200) / 1800 (B200) total per GPU, half each direction; MI300X's
  // Infinity Fabric 7 × 64 GB/s per direction (ml-engineering network/README.md). Across nodes one NIC per GPU:
  // HDR 200 Gb/s (DGX A100), NDR 400 Gb/s (DGX H100, H200 and B200 systems; MI300X platforms commonly 8 × 400G).
  static const std::vector<GpuSpec> specs = {
      {"a100-40gb", "NVIDIA A100 40GB (SXM)", 19.5, 156.0, 312.0, 1.555, 40LL << 30, "NVLink 3", 300.0, 25.0,
       "HDR 200 Gb/s", 108},
      {"a100-80gb", "NVIDIA A100 80GB (SXM)", 19.5, 156.0, 312.0, 2.039, 80LL << 30, "NVLink 3", 300.0, 25.0,
       "HDR 200 Gb/s", 108},
      {"h100-sxm", "NVIDIA H100 SXM 80GB", 67.0, 494.7, 989.4, 3.35, 80LL << 30, "NVLink 4", 450.0, 50.0,
       "NDR 400 Gb/s", 132},
      {"h200", "NVIDIA H200 SXM 141GB", 67.0, 494.7, 989.4, 4.8, 141'000'000'000LL, "NVLink 4", 450.0, 50.0,
       "NDR 400 Gb/s", 132},
      {"b200", "NVIDIA B200 SXM 180GB", 80.0, 1125.0, 2250.0, 8.0, 180'000'000'000LL, "NVLink 5", 900.0, 50.0,
       "NDR 400 Gb/s", 148},
      {"mi300x", "AMD Instinct MI300X 192GB", 163.4, 653.7, 1307.4, 5.3, 192'000'000'000LL, "Infinity Fabric", 448.0,
       50.0, "400 Gb/s", 304},
  };
  return specs;
}

const GpuSpec& gpu_spec(std::string_view name) {
  for (const GpuSpec& g : gpu_specs()) {
    if (g.name == name) return g;
  }
  throw std::invalid_argument(fmt::format(
      "--gpu: '{}' is not a known GPU; allowed values are a100-40gb, a100-80gb, h100-sxm, h200, b200, mi300x", name));
}

double gpu_peak_flops(const GpuSpec& gpu, std::string_view precision) {
  if (precision == "fp32") return gpu.fp32_tflops * 1e12;
  if (precision == "tf32") return gpu.tf32_tflops * 1e12;
  if (precision == "bf16") return gpu.bf16_tflops * 1e12;
  throw std::invalid_argument(
      fmt::format("--precision: '{}' is not allowed; allowed values are fp32, tf32, bf16", precision));
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

Link gpu_link(const GpuSpec& gpu, int64_t gpus, std::string_view which) {
  if (which != "auto" && which != "nvlink" && which != "infiniband") {
    throw std::invalid_argument(
        fmt::format("--link: '{}' is not allowed; allowed values are auto, nvlink, infiniband", which));
  }
  const bool nvlink = which == "nvlink" || (which == "auto" && gpus <= 8);
  if (nvlink) {
    return {gpu.nvlink, 2e-6, gpu.nvlink_gbps * 1e9,
            fmt::format("{} {:.0f} GB/s per direction (data sheet), α 2 µs per ring step (assumed)", gpu.nvlink,
                        gpu.nvlink_gbps)};
  }
  return {"InfiniBand " + gpu.infiniband, 5e-6, gpu.infiniband_gbps * 1e9,
          fmt::format("InfiniBand {} = {:.0f} GB/s per GPU (one HCA per GPU), α 5 µs per ring step (assumed)",
                      gpu.infiniband, gpu.infiniband_gbps)};
}

CollectiveTime collective_time(std::string_view op, double bytes, int64_t calls, int64_t ranks, const Link& link) {
  CollectiveTime t;
  if (ranks <= 1 || calls == 0) return t;
  const double n = static_cast<double>(ranks), c = static_cast<double>(calls);
  double steps = n - 1, share = (n - 1) / n;  // reduce_scatter, all_gather
  if (op == "all_reduce")
    steps = 2 * (n - 1), share = 2 * (n - 1) / n;
  else if (op == "broadcast")
    share = 1;
  t.wire_bytes = share * bytes;
  t.seconds = c * steps * link.alpha_seconds + t.wire_bytes / link.bytes_per_second;
  return t;
}

double collective_buffer_bytes(std::string_view op, const OpCount& count) {
  if (op == "all_gather") return static_cast<double>(count.bytes_written);
  if (op == "broadcast") return static_cast<double>(std::max(count.bytes_read, count.bytes_written));
  return static_cast<double>(count.bytes_read);
}

CollectiveTime communication_time(const std::map<OpKey, OpCount>& counts, int64_t ranks, const Link& link) {
  CollectiveTime total;
  for (const auto& [key, c] : counts) {
    if (key.phase != Phase::communication) continue;
    const CollectiveTime t = collective_time(key.op, collective_buffer_bytes(key.op, c), c.calls, ranks, link);
    total.seconds += t.seconds;
    total.wire_bytes += t.wire_bytes;
  }
  return total;
}

double communication_psi(const std::map<OpKey, OpCount>& counts, int64_t ranks, int64_t parameter_bytes,
                         int64_t num_parameters) {
  const Link unit{"", 0, 1, ""};
  double elements = 0;
  for (const auto& [key, c] : counts) {
    if (key.phase != Phase::communication) continue;
    const double element = key.op == "all_gather" ? static_cast<double>(parameter_bytes) : 4.0;
    elements += collective_time(key.op, collective_buffer_bytes(key.op, c), c.calls, ranks, unit).wire_bytes / element;
  }
  return elements / static_cast<double>(num_parameters);
}

const char* gpu_math_for(Precision precision) { return precision == Precision::fp32 ? "fp32" : "bf16"; }

}  // namespace reckon
