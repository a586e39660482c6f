// Data-parallel communication over MPI (Open MPI from Debian). A process started by mpirun (Open MPI sets
// OMPI_COMM_WORLD_SIZE) joins MPI_COMM_WORLD in comm_init; any other process is rank 0 of 1 and never touches
// MPI (an MPI singleton costs ~0.5 s of startup, and reckon is run alone far more often than not).
//
// Every collective records into the counters under Phase::communication, op = its name ("all_reduce"):
// calls, bytes_read = the bytes this rank sends in, bytes_written = the bytes it gets out, seconds. The bus
// bandwidth of NCCL-tests' convention follows from them (bus_bandwidth below).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace reckon {

void comm_init(int* argc, char*** argv);  // idempotent; MPI_Init_thread(FUNNELED) under mpirun
void comm_finalize();                     // MPI_Finalize if comm_init initialised MPI
// Exits this rank with `code` without MPI_Finalize, after flushing stdout and stderr and waiting 0.5 s (ranks
// failing the same way print their message first); mpirun then ends every other rank and exits non-zero. For a
// rank that fails alone: the others may be waiting in a collective, and MPI_Finalize would wait for them.
[[noreturn]] void comm_abort(int code);
int comm_rank();
int comm_size();
bool comm_active();  // true under mpirun (even with one rank)

// In place: data[i] = Σ over ranks of data[i] (float32). Recorded as op "all_reduce".
void all_reduce_sum(float* data, int64_t n);
// In place: rank r's counts[r] elements at displs[r] of `data` reach every rank (MPI_Allgatherv). Elements are
// 4 bytes (float32) or 2 (bf16: gathering moves bytes, no arithmetic). Recorded as op "all_gather": in = this
// rank's part, out = Σ counts elements.
void all_gather_in_place(void* data, int64_t element_bytes, const std::vector<int64_t>& counts,
                         const std::vector<int64_t>& displs);
// Float32 sum over ranks of send[0, Σ counts), rank r receiving elements [Σ_{q<r} counts[q], +counts[r]) in
// `recv` (MPI_Reduce_scatter). Recorded as op "reduce_scatter": in = the whole send buffer, out = this rank's part.
void reduce_scatter_sum(const float* send, float* recv, const std::vector<int64_t>& counts);
// A scalar sum (the loss): not recorded (8 bytes, not part of the step's traffic model).
double all_reduce_sum_scalar(double x);
double all_reduce_min_scalar(double x);  // the smallest over ranks (not recorded)
// The bytes of rank 0's buffer on every rank (parameters at start, so every rank begins identical). Recorded
// as op "broadcast".
void broadcast_from_rank0(void* data, int64_t bytes);
void comm_barrier();
// Rank 0's `text` (broadcast; `text` itself without mpirun), and how many ranks hold a different one (all ranks
// learn the count, so all can refuse together). Not recorded: setup, not the step's traffic.
std::string rank0_text(const std::string& text, int* ranks_differing);

// NCCL-tests' bus bandwidth: algorithm bandwidth (bytes / seconds) × 2(N−1)/N for all-reduce, × (N−1)/N for
// reduce-scatter and all-gather, × 1 for broadcast.
double bus_bandwidth(const char* collective, double bytes, double seconds, int ranks);

}  // namespace reckon
