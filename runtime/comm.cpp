#include "runtime/comm.h"

#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "runtime/counters.h"

namespace reckon {

namespace {
bool g_initialised = false;
int g_rank = 0, g_size = 1;

// MPI counts are int: large buffers go in chunks of at most 2^30 elements.
constexpr int64_t kChunk = int64_t{1} << 30;
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

int comm_rank() { return g_rank; }
int comm_size() { return g_size; }
bool comm_active() { return g_initialised; }

void all_reduce_sum(float* data, int64_t n) {
  PhaseScope phase(Phase::communication);  // first: the record is taken under it when `record` ends
  OpRecord record("all_reduce");
  if (g_initialised && g_size > 1) {
    for (int64_t off = 0; off < n; off += kChunk) {
      MPI_Allreduce(MPI_IN_PLACE, data + off, static_cast<int>(std::min(kChunk, n - off)), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
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
    if (total > std::numeric_limits<int>::max()) throw std::invalid_argument("all_gather: a bucket above 2^31 elements");
    std::vector<int> c(counts.begin(), counts.end()), d(displs.begin(), displs.end());
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, c.data(), d.data(),
                   element_bytes == 4 ? MPI_FLOAT : MPI_UINT16_T, MPI_COMM_WORLD);
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
    if (total > std::numeric_limits<int>::max()) throw std::invalid_argument("reduce_scatter: a buffer above 2^31 elements");
    std::vector<int> c(counts.begin(), counts.end());
    MPI_Reduce_scatter(send, recv, c.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
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

void broadcast_from_rank0(void* data, int64_t bytes) {
  PhaseScope phase(Phase::communication);
  OpRecord record("broadcast");
  if (g_initialised && g_size > 1) {
    auto* p = static_cast<char*>(data);
    for (int64_t off = 0; off < bytes; off += kChunk) {
      MPI_Bcast(p + off, static_cast<int>(std::min(kChunk, bytes - off)), MPI_BYTE, 0, MPI_COMM_WORLD);
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
  if (std::strcmp(collective, "reduce_scatter") == 0 || std::strcmp(collective, "all_gather") == 0) return alg * (n - 1) / n;
  return alg;
}

}  // namespace reckon
