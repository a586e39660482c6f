// ZeRO (Rajbhandari et al. 2020), stages 1 to 3, over the ranks of runtime/comm. The parameters, read as one
// flat array of P elements in the model's order, are split into N contiguous ranges: rank r owns
// [r·P/N, (r+1)·P/N) — DeepSpeed's flat partition. Each rank keeps, per parameter its range touches (a
// "segment"), AdamW's state for those elements only ("<param>.master" with bf16 parameters, "<param>.exp_avg",
// "<param>.exp_avg_sq", category optimizer_state), and updates only them with AdamW's own kernels, so every
// rank ends bit-identical, and equal to stage 0's parameters.
//   stage 1: gradients reduce-scattered in DDP's buckets (optim/data_parallel.h), each rank receiving the mean of
//            its own range; after the step, each parameter is all-gathered in place (op all_gather: in = this
//            rank's part, out = the parameter). 2Ψ of traffic, as the paper counts.
//   stage 2: + gradients sharded. A unit's full gradients ("<param>.grad") exist only during its backward
//            (created zeroed: op zero_grad in phase backward) and are reduce-scattered, one call per parameter,
//            into this rank's shard "<param>.grad.shard" (category gradient) as soon as the unit is done, then
//            freed. bf16 gradients go through float32 temporaries ("comm.bucket" widened, "comm.shard" the
//            received part) and are rounded once, as stage 0 does. After the step, the stage-1 all-gather.
//            Gradient accumulation (K micro-batches a step): the first micro-batch's reduce-scatter writes the shard,
//            each later one is received into a float32 temporary ("comm.shard"; with one rank: the gradient itself)
//            and added (op grad_accumulate, phase backward), as FSDP accumulates its sharded gradients.
//   stage 3: + parameters sharded. Only "<param>.shard" (category parameter) lives; a unit's full parameters
//            "<param>" are all-gathered in place just before use (forward, and again in backward) and freed
//            after; no all-gather after the step. amp-bf16 gathers as FSDP's MixedPrecision(param_dtype=bf16): each
//            matmul weight's and linear bias's shard is cast (op cast) into its place in "<param>.bf16", the matmul
//            operand, and that is all-gathered (2 B per element) — no float32 copy of it, no step-long bf16 copy
//            (model/layout.h gathered_in_bf16); gradients stay float32 (FSDP's reduce_dtype = float32).
// Units (model/transformer.h ParameterHooks): embeddings, each layer, the head. One rank (no mpirun) owns
// everything: the same tensors, no collectives (copies), so the memory schedule can be checked alone too.
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
// How the parameter at flat [start, start + n) splits over the ranks: rank r's elements are [displs[r],
// displs[r] + counts[r]) within it (counts 0 for ranks that own none of it).
struct ParameterSplit {
  std::vector<int64_t> counts, displs;
};
ParameterSplit parameter_split(int64_t start, int64_t n, int64_t total, int ranks);
// counts[rank] of the same split alone, without the other ranks' (O(1): estimates at thousands of ranks).
int64_t owned_count(int64_t start, int64_t n, int64_t total, int rank, int ranks);

// The shard accumulation of gradient accumulation: `elements` gradient elements of dtype `shard` read, one add
// each with an incoming element of dtype `incoming` (the received float32 mean, or with one rank the gradient), and
// written back.
OpCount grad_accumulate_count(int64_t elements, DType shard, DType incoming);

class ZeroOptimizer : public ParameterHooks {
 public:
  // stage 1, 2 or 3. Stages 2 and 3 drop the full gradients (and, 3, the full parameters) here and hook into
  // the model's schedule. Parameters float32 (fp32, amp-bf16) or bf16 with float32 master weights (bf16).
  ZeroOptimizer(Transformer& model, const AdamWConfig& config, int64_t stage, int rank, int ranks);
  ~ZeroOptimizer() override;
  ZeroOptimizer(const ZeroOptimizer&) = delete;
  ZeroOptimizer& operator=(const ZeroOptimizer&) = delete;

  // AdamW on the owned segments (state created at the first call, as AdamW does); stages 1, 2: then every
  // parameter all-gathered.
  void step();
  int64_t steps_taken() const { return step_; }
  int64_t owned_elements() const { return owned_; }
  // Gradient accumulation: false for a step's first micro-batch (its reduction writes the gradient shards), true for
  // the later ones (theirs are added).
  void set_accumulating(bool accumulating) { accumulating_ = accumulating; }

  // Stage 3: parameter `param`'s value (its dtype: the float32 one in amp-bf16) assembled from every rank's shard into
  // a new temporary; a collective, every rank calls it. Stages 1, 2: the parameter itself. For inspection (tests).
  Tensor full_value(size_t param);

  void gather(int unit) override;
  void release(int unit) override;
  void create_grads(int unit) override;
  void reduce_grads(int unit) override;

 private:
  struct Segment {
    ShardSegment where;
    Tensor value;         // stage 3: "<param>.shard"
    Tensor grad;          // stages 2, 3: "<param>.grad.shard"
    Tensor master, m, v;  // the optimizer state of these elements
  };
  void all_gather_parameter(size_t param);
  void assemble(const Tensor& full, size_t param);
  void create_state();

  Transformer& model_;
  std::vector<Parameter>& params_;
  AdamWConfig config_;
  int64_t stage_;
  int rank_, ranks_;
  bool master_weights_;
  std::vector<std::pair<int, int>> units_;
  std::vector<bool> gathered_bf16_;  // per parameter: stage 3 gathers its bf16 operand (model/layout.h)
  std::vector<int64_t> starts_;      // flat start of each parameter
  int64_t total_ = 0;
  std::vector<Segment> segments_;
  std::vector<int> segment_of_;  // per parameter: its segment on this rank, or -1
  // AdamW's work: chunks of at most 64 K elements over all segments (both threads busy on one large segment too),
  // built with the state.
  struct Chunk {
    size_t segment;
    int64_t offset, count;
  };
  std::vector<Chunk> chunks_;
  int64_t step_ = 0, owned_ = 0;
  bool accumulating_ = false;
};

}  // namespace reckon
