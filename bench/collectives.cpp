// Collectives on MPI ranks: all_reduce, reduce_scatter and all_gather of float32 buffers through runtime/comm, against
// a plain memcpy of the same bytes in the same binary and run (the roof a shared-memory transport approaches).
// Bus bandwidth in NCCL-tests' convention (busbw = algbw × 2(N−1)/N for all-reduce, × (N−1)/N for reduce-scatter
// and all-gather).
// Every rank runs every benchmark in lockstep (fixed iteration counts); rank 0 reports. Run (as root add
// OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1):
//   OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 build/bench_collectives
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "bench/bench_main.h"
#include "runtime/comm.h"

namespace {

using namespace reckon;

void report(benchmark::State& state, const char* collective, double bytes) {
  state.counters["algbw_GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw_GB/s"] = benchmark::Counter(bus_bandwidth(collective, bytes, 1.0, comm_size()) * 1e-9,
                                                    benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ranks"] = comm_size();
}

void BM_all_reduce(benchmark::State& state) {
  std::vector<float> buf(static_cast<size_t>(state.range(0) / 4), 1.0f);
  comm_barrier();
  for (auto _ : state) all_reduce_sum(buf.data(), static_cast<int64_t>(buf.size()));
  report(state, "all_reduce", static_cast<double>(state.range(0)));
}

void BM_all_gather(benchmark::State& state) {
  const int64_t n = state.range(0) / 4, ranks = comm_size();
  std::vector<float> buf(static_cast<size_t>(n), 1.0f);
  std::vector<int64_t> counts, displs;
  for (int64_t r = 0; r < ranks; ++r)
    counts.push_back(n * (r + 1) / ranks - n * r / ranks), displs.push_back(n * r / ranks);
  comm_barrier();
  for (auto _ : state) all_gather_in_place(buf.data(), 4, counts, displs);
  report(state, "all_gather", static_cast<double>(state.range(0)));
}

void BM_reduce_scatter(benchmark::State& state) {
  const int64_t n = state.range(0) / 4, ranks = comm_size();
  std::vector<float> send(static_cast<size_t>(n), 1.0f), recv(static_cast<size_t>(n / ranks + 1), 0.0f);
  std::vector<int64_t> counts;
  for (int64_t r = 0; r < ranks; ++r) counts.push_back(n * (r + 1) / ranks - n * r / ranks);
  comm_barrier();
  for (auto _ : state) reduce_scatter_sum(send.data(), recv.data(), counts);
  report(state, "reduce_scatter", static_cast<double>(state.range(0)));
}

// The roof: one memcpy of the buffer's bytes (a shared-memory transport moves each byte at least once).
void BM_memcpy(benchmark::State& state) {
  std::vector<char> a(static_cast<size_t>(state.range(0)), 1), b(a.size());
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), a.size());
    benchmark::DoNotOptimize(b.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(state.range(0)) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int64_t bytes : {int64_t{1} << 20, int64_t{8} << 20, int64_t{25} << 20, int64_t{100} << 20}) b->Arg(bytes);
}
BENCHMARK(BM_all_reduce)->ArgName("bytes")->Apply(sizes)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_reduce_scatter)
    ->ArgName("bytes")
    ->Apply(sizes)
    ->Iterations(20)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_all_gather)->ArgName("bytes")->Apply(sizes)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_memcpy)->ArgName("bytes")->Apply(sizes)->Iterations(20)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  comm_init(&argc, &argv);
  if (comm_rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  const int rc = reckon_bench_main(argc, argv);
  comm_finalize();
  return rc;
}
