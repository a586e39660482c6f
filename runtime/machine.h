// What the machine is: threads, CPU, oneDNN version / ISA / the implementation its matmul picks, compiler.
// Every reckon tool prints this at startup so numbers always come with the setup that produced them.
#pragma once

#include <string>

#include "runtime/matmul.h"

namespace reckon {

struct MachineInfo {
  int threads = 0;           // OpenMP threads the runtime uses
  int hardware_threads = 0;  // logical CPUs the OS reports
  std::string cpu_model;
  std::string onednn_version;           // "2.6.3 (cpu runtime OpenMP)"
  std::string onednn_isa;               // effective ISA, e.g. "avx512_core_bf16"
  std::string onednn_matmul_impl;       // implementation for a 256x512x512 f32 matmul
  std::string onednn_bf16_matmul_impl;  // the same shape with bf16 operands, or "unavailable: <why>"
  std::string bf16_convert_isa;         // f32 -> bf16 conversion path: avx512_bf16, avx512f or scalar
  std::string kernel_isa;  // reckon's own kernels (runtime/kernel_isa.h): amx, avx512_bf16, avx512, reference [(up to …)]
  std::string compiler;
  int openmp_version = 0;  // _OPENMP, e.g. 201511
};

// Sets the OpenMP thread count used by every op and by oneDNN primitives created afterwards.
// Throws std::invalid_argument naming `threads` and the allowed range [1, 1024].
void set_num_threads(int threads);
int num_threads();

MachineInfo machine_info();

// Empty if this CPU runs oneDNN bf16 matmuls; otherwise why not, naming the ISA bf16 needs (AVX-512:
// avx512_core; at speed avx512_core_bf16 or AMX) and the one this CPU has. Checked once (creates one primitive).
const std::string& bf16_matmul_unavailable_reason();
// Throws std::invalid_argument with that reason, prefixed by `what` ("precision = amp-bf16"), if non-empty.
void check_bf16_matmul_available(const std::string& what);

// The FMA peak: every thread runs independent FMA chains on 16-lane float vectors (no memory traffic).
// fma_peak_kernel runs `iters` iterations in every thread and returns the FLOPs executed;
// measure_fma_peak_gflops repeats it for about `seconds` and returns the best rate.
int64_t fma_peak_kernel(int64_t iters);
// MemAvailable from /proc/meminfo, in bytes (0 if unknown).
int64_t available_memory_bytes();
// Physical memory (MemTotal), in bytes (0 if unknown).
int64_t physical_memory_bytes();
double measure_fma_peak_gflops(double seconds);
// oneDNN matmul rate at a config-S-like shape (2048 x 2048 x 512, y = x·Wᵀ, float32 dst) with float32 or
// bf16 operands, best over about `seconds`.
double measure_matmul_gflops(double seconds, DType operands = DType::f32);
// Median seconds of one oneDNN matmul call at exactly this geometry (dims, strides, alpha, accumulate, dtypes),
// over `repetitions` calls after two warm-up calls, on zero-filled operands. Not counted in the counters.
// Throws std::invalid_argument naming `repetitions` and the range [1, 1000].
double measure_matmul_seconds(const MatmulGeometry& geometry, int repetitions);
// Memory bandwidth in GB/s (10⁹ B/s) of a STREAM triad a = b + s·c over 3 × 64 Mi floats, counted as
// 16 B per element (reads b, c; writes a, which costs a read for ownership too), best over about `seconds`.
double measure_bandwidth_gbs(double seconds);
std::string machine_summary(const MachineInfo& info);  // one line, for tool startup

}  // namespace reckon
