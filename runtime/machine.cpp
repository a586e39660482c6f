#include "runtime/machine.h"
#include "runtime/kernel_isa.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/check.h"
#include "runtime/counters.h"
#include "runtime/matmul.h"
#include "runtime/tensor.h"

namespace reckon {

namespace {
const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic:
      return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "unknown";
  }
}

std::string read_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}
}  // namespace

void set_num_threads(int threads) {
  if (threads < 1 || threads > 1024) {
    throw std::invalid_argument(fmt::format("threads: {} is outside the allowed range [1, 1024]", threads));
  }
  omp_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

namespace {
using v16 = float __attribute__((vector_size(64)));
constexpr int kChains = 16;  // enough independent chains to cover FMA latency on two pipes
}  // namespace

int64_t fma_peak_kernel(int64_t iters) {
  float sink = 0.0f;
  int threads = 1;
#pragma omp parallel reduction(+ : sink)
  {
#pragma omp single
    threads = omp_get_num_threads();
    v16 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = v16{} + static_cast<float>(c) * 1e-3f;
    const v16 a = v16{} + 0.999999f, b = v16{} + 1e-7f;
    for (int64_t i = 0; i < iters; ++i) {
      for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;  // one FMA per lane under -march=native
    }
    for (int c = 0; c < kChains; ++c) sink += acc[c][0];
  }
  volatile float keep = sink;  // the chains must not be optimised away
  (void)keep;
  return 2 * 16 * kChains * iters * threads;
}

double measure_matmul_gflops(double seconds, DType operands) {
  const UntrackedScope untracked;  // first: its buffers are freed before tracking resumes
  // The probe is not part of anything the user measures: keep it out of the counters.
  const bool was_enabled = counters().enabled();
  counters().set_enabled(false);
  const int64_t m = 2048, n = 2048, k = 512;
  Tensor x = Tensor::zeros({m, k}, Category::temporary, "probe.matmul.x", operands);
  Tensor w = Tensor::zeros({n, k}, Category::temporary, "probe.matmul.w", operands);
  Tensor y = Tensor::zeros({m, n}, Category::temporary, "probe.matmul.y");
  const Tensor wt = w.transpose(0, 1);
  matmul(y, x, wt, "probe");
  double best = 0.0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = std::chrono::steady_clock::now();
    matmul(y, x, wt, "probe");
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * m * n * k / dt * 1e-9);
  } while (std::chrono::steady_clock::now() < deadline);
  counters().set_enabled(was_enabled);
  return best;
}

namespace {
// A zeroed buffer holding every element a strided view of `dims` / `strides` touches, viewed that way.
Tensor strided_operand(int rank, const int64_t* dims, const int64_t* strides, const char* name, DType dtype) {
  Shape shape(dims, dims + rank), st(strides, strides + rank);
  int64_t span = 1;
  for (int i = 0; i < rank; ++i) span += (dims[i] - 1) * strides[i];
  return Tensor::zeros({span}, Category::temporary, name, dtype).as_strided(shape, st, 0);
}
}  // namespace

double measure_matmul_seconds(const MatmulGeometry& g, int repetitions) {
  const UntrackedScope untracked;  // first: its buffers are freed before tracking resumes
  check_arg(repetitions >= 1 && repetitions <= 1000, "repetitions: {} is outside [1, 1000]", repetitions);
  const bool was_enabled = counters().enabled();
  counters().set_enabled(false);
  const Tensor a = strided_operand(g.rank, g.a_dims, g.a_strides, "probe.matmul.a", g.a_dtype);
  const Tensor b = strided_operand(g.rank, g.b_dims, g.b_strides, "probe.matmul.b", g.b_dtype);
  const Tensor dst = strided_operand(g.rank, g.dst_dims, g.dst_strides, "probe.matmul.dst", g.dst_dtype);
  for (int i = 0; i < 2; ++i) matmul(dst, a, b, "probe", g.alpha, g.accumulate);
  std::vector<double> times;
  for (int i = 0; i < repetitions; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    matmul(dst, a, b, "probe", g.alpha, g.accumulate);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  counters().set_enabled(was_enabled);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double measure_bandwidth_gbs(double seconds) {
  const UntrackedScope untracked;  // first: its buffers are freed before tracking resumes
  const int64_t n = 64LL << 20;
  Tensor a = Tensor::zeros({n}, Category::temporary, "probe.stream.a");
  Tensor b = Tensor::zeros({n}, Category::temporary, "probe.stream.b");
  Tensor c = Tensor::zeros({n}, Category::temporary, "probe.stream.c");
  float *pa = a.data(), *pb = b.data(), *pc = c.data();
  double best = 0.0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 16.0 * n / dt * 1e-9);
  } while (std::chrono::steady_clock::now() < deadline);
  return best;
}

namespace {
int64_t meminfo_bytes(const std::string& wanted) {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  int64_t value = 0;
  while (in >> key >> value >> unit) {
    if (key == wanted) return value * 1024;
  }
  return 0;
}
}  // namespace

int64_t available_memory_bytes() { return meminfo_bytes("MemAvailable:"); }
int64_t physical_memory_bytes() { return meminfo_bytes("MemTotal:"); }

double measure_fma_peak_gflops(double seconds) {
  double best = 0.0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  do {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t flops = fma_peak_kernel(1 << 17);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(flops) / dt * 1e-9);
  } while (std::chrono::steady_clock::now() < deadline);
  return best;
}

const std::string& bf16_matmul_unavailable_reason() {
  static const std::string reason = [] {
    const std::string isa = isa_name(dnnl::get_effective_cpu_isa());
    MatmulGeometry g = matmul_geometry_plain(1, 16, 16, 16, false, true, 1.0f, false);
    g.a_dtype = g.b_dtype = DType::bf16;
    try {
      matmul_impl_name(g);
      return std::string();
    } catch (const std::exception&) {
      return fmt::format(
          "this CPU cannot run bf16 matmuls: oneDNN needs AVX-512 (avx512_core; at speed "
          "avx512_core_bf16 or avx512_core_amx), this CPU's ISA is {}",
          isa);
    }
  }();
  return reason;
}

void check_bf16_matmul_available(const std::string& what) {
  const std::string& reason = bf16_matmul_unavailable_reason();
  check_arg(reason.empty(), "{}: {}; use precision = fp32", what, reason);
}

MachineInfo machine_info() {
  MachineInfo info;
  info.threads = omp_get_max_threads();
  info.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());
  info.cpu_model = read_cpu_model();
  const dnnl_version_t* v = dnnl_version();
  info.onednn_version = fmt::format("{}.{}.{} (cpu runtime {})", v->major, v->minor, v->patch,
                                    v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
  info.onednn_isa = isa_name(dnnl::get_effective_cpu_isa());
  info.onednn_matmul_impl = matmul_impl_name(matmul_geometry_plain(1, 256, 512, 512, false, true, 1.0f, false));
  MatmulGeometry g16 = matmul_geometry_plain(1, 256, 512, 512, false, true, 1.0f, false);
  g16.a_dtype = g16.b_dtype = DType::bf16;
  info.onednn_bf16_matmul_impl = bf16_matmul_unavailable_reason().empty()
                                     ? matmul_impl_name(g16)
                                     : "unavailable (needs avx512_core; precision fp32 only)";
  info.bf16_convert_isa = bf16_convert_isa();
  info.kernel_isa = kernel_isa() == kernel_isa_best() ? kernel_isa_name(kernel_isa())
                                                      : fmt::format("{} (up to {})", kernel_isa_name(kernel_isa()),
                                                                    kernel_isa_name(kernel_isa_best()));
  info.compiler = fmt::format("g++ {}", __VERSION__);
  info.openmp_version = _OPENMP;
  return info;
}

std::string machine_summary(const MachineInfo& info) {
  return fmt::format(
      "machine: {} | {} threads (of {} logical CPUs) | oneDNN {} isa {} matmul {} bf16 matmul {} (convert {}, "
      "kernels {}) | {} | OpenMP {}",
      info.cpu_model, info.threads, info.hardware_threads, info.onednn_version, info.onednn_isa,
      info.onednn_matmul_impl, info.onednn_bf16_matmul_impl, info.bf16_convert_isa, info.kernel_isa, info.compiler,
      info.openmp_version);
}

}  // namespace reckon
