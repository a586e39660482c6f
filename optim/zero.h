// ZeRO stage 1 (Rajbhandari et al. 2020): the optimizer state is sharded across the data-parallel ranks. The
// parameters, read as one flat array of P elements in the model's order, are split into N contiguous ranges
// (rank r owns [r·P/N, (r+1)·P/N)); each rank keeps AdamW's m and v only for the segments of its range
// ("<param>.exp_avg" / "<param>.exp_avg_sq", one tensor per parameter the range touches, category
// optimizer_state), updates only those elements (after the stage-0 gradient all-reduce), then the parameters
// are all-gathered in buckets of at most kGradientBucketBytes (tracked temporaries "comm.gather", op
// all_gather: in = this rank's part of the bucket, out = the bucket), so every rank holds them all again.
// Per element the update is AdamW's own kernel: ranks end bit-identical, and equal to stage 0's parameters.
// Float32 parameters (fp32, amp-bf16); precision = bf16's master weights are not sharded yet (refused).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"

namespace reckon {

struct ShardSegment {
  size_t param;    // index into the parameters
  int64_t offset;  // first element within it
  int64_t count;
};
// The flat range [begin, end) rank `rank` of `ranks` owns, and the per-parameter segments it touches.
std::pair<int64_t, int64_t> owned_range(int64_t total, int rank, int ranks);
std::vector<ShardSegment> owned_segments(const std::vector<int64_t>& sizes, int rank, int ranks);

class ZeroAdamW {
 public:
  ZeroAdamW(std::vector<Parameter>& params, const AdamWConfig& config, int rank, int ranks);
  // AdamW on the owned segments (state created at the first call), then the parameters all-gathered.
  void step();
  int64_t steps_taken() const { return step_; }
  int64_t owned_elements() const { return owned_; }

 private:
  std::vector<Parameter>& params_;
  AdamWConfig config_;
  int rank_, ranks_;
  std::vector<ShardSegment> segments_;
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0, owned_ = 0;
};

}  // namespace reckon
