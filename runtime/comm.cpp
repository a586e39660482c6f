#include "runtime/comm.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "runtime/counters.h"

namespace reckon {

namespace {
bool g_initialised = false;
int g_rank = 0, g_size = 1;

// Reductions (all_reduce, reduce_scatter) run in chunks of kReduceChunkBytes: a chunk stays in this CPU's caches
// while both ranks touch it, as NCCL pipelines its rings in chunks. On 2 ranks of the AMD EPYC host, 64 MiB
// all-reduced whole took 37 ms, in 4 MiB chunks 17–30 ms; reduce-scattered 77 ms vs 20–35 ms. Gathers and
// broadcasts only move bytes and were faster whole (all-gather 64 MiB: 8–9 ms whole, 15–16 ms in 4 MiB chunks),
// so they are chunked only to keep MPI's int counts in range (bench/zero_step.cpp, BENCHMARKS.md).
constexpr int64_t kReduceChunkBytes = int64_t{4} << 20;
constexpr int64_t kMaxChunkElements = int64_t{1} << 30;

// The part of [lo, hi) inside [a, b), as (count, offset from a); empty: (0, 0).
std::pair<int64_t, int64_t> overlap(int64_t lo, int64_t hi, int64_t a, int64_t b) {
  const int64_t x = std::max(lo, a), y = std::min(hi, b);
  return x < y ? std::pair{y - x, x - a} : std::pair{int64_t{0}, int64_t{0}};
}
}  // namespace

void comm_init(int* argc, char*** argv) {
  if (g_initialised || std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_initialised = true;
}

void comm_finalize() {
  if (!g_initialised) return;
  MPI_Finalize();
  g_initialised = false;
}

void comm_abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::_Exit(code);  // without MPI_Finalize: mpirun sees a rank exit non-zero and ends the others
}

int comm_rank() { return g_rank; }
int comm_size() { return g_size; }
bool comm_active() { return g_initialised; }

void all_reduce_sum(float* data, int64_t n) {
  PhaseScope phase(Phase::communication);  // first: the record is taken under it when `record` ends
  OpRecord record("all_reduce");
  if (g_initialised && g_size > 1) {
    const int64_t chunk = kReduceChunkBytes / 4;
    for (int64_t off = 0; off < n; off += chunk) {
      MPI_Allreduce(MPI_IN_PLACE, data + off, static_cast<int>(std::min(chunk, n - off)), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
    }
  }
  record.count.bytes_read = 4 * n;
  record.count.bytes_written = 4 * n;
}

void all_gather_in_place(void* data, int64_t element_bytes, const std::vector<int64_t>& counts,
                         const std::vector<int64_t>& displs) {
  PhaseScope phase(Phase::communication);
  OpRecord record("all_gather");
  if (element_bytes != 4 && element_bytes != 2) throw std::invalid_argument("all_gather: elements of 2 or 4 bytes");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  if (g_initialised && g_size > 1) {
    // Chunk by chunk of the gathered buffer: each rank's part of the chunk, in place.
    const int64_t chunk = kMaxChunkElements;
    const MPI_Datatype type = element_bytes == 4 ? MPI_FLOAT : MPI_UINT16_T;
    std::vector<int> c(counts.size()), d(counts.size());
    for (int64_t a = 0; a < total; a += chunk) {
      const int64_t b = std::min(total, a + chunk);
      for (size_t r = 0; r < counts.size(); ++r) {
        const auto [count, offset] = overlap(displs[r], displs[r] + counts[r], a, b);
        c[r] = static_cast<int>(count), d[r] = static_cast<int>(offset);
      }
      MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, static_cast<char*>(data) + a * element_bytes, c.data(),
                     d.data(), type, MPI_COMM_WORLD);
    }
  }
  record.count.bytes_read = element_bytes * counts[static_cast<size_t>(g_rank)];
  record.count.bytes_written = element_bytes * total;
}

void reduce_scatter_sum(const float* send, float* recv, const std::vector<int64_t>& counts) {
  PhaseScope phase(Phase::communication);
  OpRecord record("reduce_scatter");
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  const int64_t mine = counts[static_cast<size_t>(g_rank)];
  if (g_initialised && g_size > 1) {
    // Chunk by chunk of the send buffer: rank r receives its part of the chunk at its place in `recv`.
    const int64_t chunk = kReduceChunkBytes / 4;
    std::vector<int> c(counts.size());
    int64_t my_start = 0;
    for (int r = 0; r < g_rank; ++r) my_start += counts[static_cast<size_t>(r)];
    for (int64_t a = 0; a < total; a += chunk) {
      const int64_t b = std::min(total, a + chunk);
      int64_t start = 0;
      for (size_t r = 0; r < counts.size(); ++r) {
        c[r] = static_cast<int>(overlap(start, start + counts[r], a, b).first);
        start += counts[r];
      }
      const int64_t into = std::max<int64_t>(0, a - my_start);  // where this chunk's part lands in recv
      float unused = 0;
      float* out = c[static_cast<size_t>(g_rank)] > 0 ? recv + into : &unused;
      MPI_Reduce_scatter(send + a, out, c.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
  } else if (mine > 0 && send != recv) {
    std::memcpy(recv, send, static_cast<size_t>(mine) * 4);
  }
  record.count.bytes_read = 4 * total;
  record.count.bytes_written = 4 * mine;
}

double all_reduce_sum_scalar(double x) {
  if (!g_initialised || g_size == 1) return x;
  double out = 0;
  MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

double all_reduce_min_scalar(double x) {
  if (!g_initialised || g_size == 1) return x;
  double out = 0;
  MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  return out;
}

void broadcast_from_rank0(void* data, int64_t bytes) {
  PhaseScope phase(Phase::communication);
  OpRecord record("broadcast");
  if (g_initialised && g_size > 1) {
    auto* p = static_cast<char*>(data);
    for (int64_t off = 0; off < bytes; off += kMaxChunkElements) {
      MPI_Bcast(p + off, static_cast<int>(std::min(kMaxChunkElements, bytes - off)), MPI_BYTE, 0, MPI_COMM_WORLD);
    }
  }
  record.count.bytes_read = g_rank == 0 ? bytes : 0;
  record.count.bytes_written = g_rank == 0 ? 0 : bytes;
}

std::string rank0_text(const std::string& text, int* ranks_differing) {
  *ranks_differing = 0;
  if (!g_initialised || g_size == 1) return text;
  int64_t length = static_cast<int64_t>(text.size());
  MPI_Bcast(&length, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  std::string root(static_cast<size_t>(length), '\0');
  if (g_rank == 0) root = text;
  MPI_Bcast(root.data(), static_cast<int>(length), MPI_CHAR, 0, MPI_COMM_WORLD);
  int mine = root == text ? 0 : 1;
  MPI_Allreduce(MPI_IN_PLACE, &mine, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  *ranks_differing = mine;
  return root;
}

void comm_barrier() {
  if (g_initialised && g_size > 1) MPI_Barrier(MPI_COMM_WORLD);
}

double bus_bandwidth(const char* collective, double bytes, double seconds, int ranks) {
  if (seconds <= 0 || ranks < 1) return 0.0;
  const double alg = bytes / seconds, n = ranks;
  if (std::strcmp(collective, "all_reduce") == 0) return alg * 2 * (n - 1) / n;
  if (std::strcmp(collective, "reduce_scatter") == 0 || std::strcmp(collective, "all_gather") == 0)
    return alg * (n - 1) / n;
  return alg;
}

}  // namespace reckon
