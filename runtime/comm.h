// Data-parallel communication over MPI (Open MPI from Debian). A process started by mpirun (Open MPI sets
// OMPI_COMM_WORLD_SIZE) joins MPI_COMM_WORLD in comm_init; any other process is rank 0 of 1 and never touches
// MPI (an MPI singleton costs ~0.5 s of startup, and reckon is run alone far more often than not).
//
// Every collective records into the counters under Phase::communication, op = its name ("all_reduce"):
// calls, bytes_read = the bytes this rank sends in, bytes_written = the bytes it gets out, seconds. The bus
// bandwidth of NCCL-tests' convention follows from them (bus_bandwidth below).
#pragma once

#include <cstdint>
#include <vector>

namespace reckon {

void comm_init(int* argc, char*** argv);  // idempotent; MPI_Init_thread(FUNNELED) under mpirun
void comm_finalize();                     // MPI_Finalize if comm_init initialised MPI
int comm_rank();
int comm_size();
bool comm_active();  // true under mpirun (even with one rank)

// In place: data[i] = Σ over ranks of data[i] (float32). Recorded as op "all_reduce".
void all_reduce_sum(float* data, int64_t n);
// In place: rank r's counts[r] floats at displs[r] of `data` reach every rank (MPI_Allgatherv). Recorded as op
// "all_gather": in = this rank's part, out = the whole buffer (Σ counts).
void all_gather_in_place(float* data, const std::vector<int64_t>& counts, const std::vector<int64_t>& displs);
// A scalar sum (the loss): not recorded (8 bytes, not part of the step's traffic model).
double all_reduce_sum_scalar(double x);
// The bytes of rank 0's buffer on every rank (parameters at start, so every rank begins identical). Recorded
// as op "broadcast".
void broadcast_from_rank0(void* data, int64_t bytes);
void comm_barrier();

// NCCL-tests' bus bandwidth: algorithm bandwidth (bytes / seconds) × 2(N−1)/N for all-reduce, × (N−1)/N for
// reduce-scatter and all-gather, × 1 for broadcast.
double bus_bandwidth(const char* collective, double bytes, double seconds, int ranks);

}  // namespace reckon
