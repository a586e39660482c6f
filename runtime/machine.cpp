#include "runtime/machine.h"

#include <omp.h>

#include <fstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/matmul.h"

namespace reckon {

namespace {
const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
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
  info.compiler = fmt::format("g++ {}", __VERSION__);
  info.openmp_version = _OPENMP;
  return info;
}

std::string machine_summary(const MachineInfo& info) {
  return fmt::format("machine: {} | {} threads (of {} logical CPUs) | oneDNN {} isa {} matmul {} | {} | OpenMP {}",
                     info.cpu_model, info.threads, info.hardware_threads, info.onednn_version, info.onednn_isa,
                     info.onednn_matmul_impl, info.compiler, info.openmp_version);
}

}  // namespace reckon
