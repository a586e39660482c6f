// Data parallelism, stage 0 (PyTorch DDP's semantics): every rank runs forward and backward on its slice of
// the global batch, then the gradients are averaged across ranks before the (replicated) optimizer step, so
// N ranks with global batch B follow the single-process run with batch B.
//
// Gradients are packed in parameter order into buckets of at most config field bucket_cap_mb (DDP's default 25 MiB;
// a parameter larger than that is a bucket of its own), each a tracked temporary "comm.bucket.<k>" alive for
// its all-reduce: copy in, sum across ranks (runtime/comm: op all_reduce, phase communication), copy out × 1/N.
// bf16 gradients (precision = bf16) are widened into the float32 bucket, summed in float32 and rounded once on the
// way back: 4 bytes per parameter on the wire (MPI has no bf16 type; NCCL-based DDP sends 2).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "model/transformer.h"

namespace reckon {

constexpr int64_t kGradientBucketBytes = int64_t{25} << 20;

// Parameters [first, last) of each bucket, for parameters of `sizes` elements in the model's order
// (model/layout.h): at most bucket_bytes of float32 gradients each (a larger parameter is a bucket of its own).
// The runtime packs these buckets; the estimators count and replay the same ones.
std::vector<std::pair<size_t, size_t>> bucket_ranges(const std::vector<int64_t>& sizes, int64_t bucket_bytes);

// Averages every parameter's gradient across the ranks of runtime/comm (nothing to do with one rank). Returns
// the number of buckets.
int64_t all_reduce_gradients(std::vector<Parameter>& params, int64_t bucket_bytes = kGradientBucketBytes);
// ZeRO-1 (optim/zero.h): the same buckets reduce-scattered instead, each rank receiving the mean of its own flat
// range only ("comm.shard", a tracked temporary beside the bucket): the rest of its gradients stay local and
// unused. Half an all-reduce's traffic. Returns the number of buckets.
int64_t reduce_scatter_gradients(std::vector<Parameter>& params, int64_t bucket_bytes);
// Every rank starts from rank 0's parameters (the same seed gives the same model; this makes it so).
void broadcast_parameters(std::vector<Parameter>& params);

}  // namespace reckon
