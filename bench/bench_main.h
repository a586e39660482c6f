// The shared main of reckon's Google Benchmark binaries: records the machine line in the JSON context and
// fails when a filter matches no benchmark (so a typo in a smoke test cannot pass).
#pragma once

#include <benchmark/benchmark.h>

#include "runtime/machine.h"

inline int reckon_bench_main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("reckon_machine", reckon::machine_summary(reckon::machine_info()));
  const size_t ran = benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return ran > 0 ? 0 : 1;
}
