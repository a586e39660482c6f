// Data parallelism over MPI (issue 14, stage 0), run by ctest as `mpirun -np 2 test_mpi` (one OpenMP thread per
// rank): 2 ranks with global batch B reproduce the single-process run with batch B — losses within 1e-6
// relative per step over 20 steps (float32; only the summation order of the gradient average differs) — and
// every rank holds bit-identical parameters after every step; the all-reduce traffic is the gradients' bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "model/data.h"
#include "optim/data_parallel.h"
#include "optim/step.h"
#include "optim/zero.h"
#include "runtime/allocator.h"
#include "runtime/comm.h"
#include "runtime/counters.h"
#include "runtime/machine.h"

namespace reckon {
namespace {

TEST(DataParallel, RanksReproduceTheSingleProcessRunAndStayIdentical) {
  const int ranks = comm_size(), rank = comm_rank();
  ASSERT_GE(ranks, 2) << "run under mpirun -np 2";
  TrainConfig global = preset_config("tiny");
  global.model.batch_size = 2 * ranks;
  global.model.position = Position::learned;
  TrainConfig local = global;
  local.model.batch_size = global.model.batch_size / ranks;
  TokenData data = TokenData::random(global.model.vocab_size, 11);

  TrainingSession single(global);  // every rank runs the reference alone, no communication
  TrainingSession ddp(local);
  ddp.data_parallel = true;
  broadcast_parameters(ddp.model.parameters());
  counters().reset();
  for (int64_t step = 0; step < 20; ++step) {
    data.fill_batch(single.tokens, single.targets, step);
    const double expected = single.step();
    data.fill_batch_rows(ddp.tokens, ddp.targets, step, rank * local.model.batch_size, global.model.batch_size);
    const double loss = ddp.step();
    EXPECT_LE(std::abs(loss - expected), 1e-6 * std::abs(expected)) << "step " << step + 1;
    // Parameters identical on every rank: rank 0's bytes broadcast and compared.
    for (const Parameter& p : ddp.model.parameters()) {
      std::vector<float> mine(p.value.data(), p.value.data() + p.value.numel()), theirs = mine;
      broadcast_from_rank0(theirs.data(), 4 * p.value.numel());
      ASSERT_EQ(std::memcmp(mine.data(), theirs.data(), mine.size() * 4), 0) << p.name << " differs on rank " << rank;
    }
  }
  // The traffic: one bucket (tiny's 164,160 gradients fit in 25 MiB) per step, in = out = 4 B per parameter.
  const OpCount all_reduce = counters().get("all_reduce", Phase::communication);
  EXPECT_EQ(all_reduce.calls, 20);
  EXPECT_EQ(all_reduce.bytes_read, 20 * 4 * ddp.model.num_parameters());
  EXPECT_EQ(all_reduce.bytes_written, 20 * 4 * ddp.model.num_parameters());
}

// ZeRO-1: each rank keeps AdamW's state for its 1/N of the parameters only, yet every rank ends every step with
// the same parameters as stage 0 (bit for bit: the same kernel per element, then all-gathered), so the losses
// follow the single process as stage 0's do.
TEST(DataParallel, ZeroStage1EqualsStage0BitForBitWithAShardOfTheState) {
  const int ranks = comm_size(), rank = comm_rank();
  ASSERT_GE(ranks, 2);
  TrainConfig c = preset_config("tiny");
  c.model.batch_size = 2;  // per rank
  TrainConfig c1 = c;
  c1.model.zero_stage = 1;
  TrainingSession stage0(c), stage1(c1);
  stage0.data_parallel = stage1.data_parallel = true;
  broadcast_parameters(stage0.model.parameters());
  broadcast_parameters(stage1.model.parameters());
  TokenData data = TokenData::random(c.model.vocab_size, 3);
  const int64_t before = tracker().stats()[Category::optimizer_state].allocated_bytes.current;
  for (int64_t step = 0; step < 10; ++step) {
    data.fill_batch_rows(stage0.tokens, stage0.targets, step, rank * 2, ranks * 2);
    data.fill_batch_rows(stage1.tokens, stage1.targets, step, rank * 2, ranks * 2);
    const double l0 = stage0.step(), l1 = stage1.step();
    EXPECT_EQ(l0, l1) << "step " << step + 1;
    for (size_t i = 0; i < stage0.model.parameters().size(); ++i) {
      const Tensor& a = stage0.model.parameters()[i].value;
      const Tensor& b = stage1.model.parameters()[i].value;
      ASSERT_EQ(std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * 4), 0) << stage0.model.parameters()[i].name;
    }
  }
  // This rank's optimizer state: 8 B per owned element (+ 64-byte rounding per segment tensor), stage 0's 8 B
  // per parameter; together the ranks own each element once.
  const int64_t p = stage0.model.num_parameters();
  const int64_t state = tracker().stats()[Category::optimizer_state].allocated_bytes.current - before;
  const auto [lo, hi] = owned_range(p, rank, ranks);
  EXPECT_GE(state - 8 * p, 8 * (hi - lo));
  EXPECT_LE(state - 8 * p, 8 * (hi - lo) + 2 * 64 * static_cast<int64_t>(stage0.model.parameters().size()));
  EXPECT_EQ(static_cast<int64_t>(all_reduce_sum_scalar(static_cast<double>(hi - lo))), p);
}

// precision = bf16 (bf16 gradients, float32 master weights): gradients widened, averaged in float32 and rounded
// once; the ranks stay bit-identical and follow the single process within bf16 rounding (the mean of two
// half-batch bf16 gradients is not the bf16 gradient of the whole batch): losses within 1% over 10 steps.
TEST(DataParallel, Bf16GradientsAveragedInFloat32KeepTheRanksIdentical) {
  if (!bf16_matmul_unavailable_reason().empty()) GTEST_SKIP() << bf16_matmul_unavailable_reason();
  const int ranks = comm_size(), rank = comm_rank();
  ASSERT_GE(ranks, 2);
  TrainConfig global = preset_config("tiny");
  global.model.precision = Precision::bf16;
  global.model.batch_size = 2 * ranks;
  TrainConfig local = global;
  local.model.batch_size = 2;
  TrainingSession single(global), ddp(local);
  ddp.data_parallel = true;
  broadcast_parameters(ddp.model.parameters());
  TokenData data = TokenData::random(global.model.vocab_size, 5);
  for (int64_t step = 0; step < 10; ++step) {
    data.fill_batch(single.tokens, single.targets, step);
    data.fill_batch_rows(ddp.tokens, ddp.targets, step, rank * 2, global.model.batch_size);
    const double expected = single.step(), loss = ddp.step();
    EXPECT_LE(std::abs(loss - expected), 0.01 * expected) << "step " << step + 1;
    for (const Parameter& p : ddp.model.parameters()) {
      const int64_t bytes = p.value.numel() * 2;
      std::vector<char> mine(static_cast<const char*>(p.value.raw_data()), static_cast<const char*>(p.value.raw_data()) + bytes);
      std::vector<char> theirs = mine;
      broadcast_from_rank0(theirs.data(), bytes);
      ASSERT_TRUE(mine == theirs) << p.name << " differs on rank " << rank;
    }
  }
}

TEST(DataParallel, BucketsSplitAtTheBucketSize) {
  if (comm_size() < 2) GTEST_SKIP();
  TrainConfig c = preset_config("tiny");
  TrainingSession s(c);
  counters().reset();
  // 16 KiB buckets: every parameter of tiny fills its own bucket or shares one; the count follows from the sizes.
  const int64_t bucket = 16 << 10;
  int64_t expected = 0, used = 0;
  bool open = false;
  for (const Parameter& p : s.model.parameters()) {
    const int64_t bytes = 4 * p.grad.numel();
    if (!open || used + bytes > bucket) {
      ++expected, used = bytes, open = true;
    } else {
      used += bytes;
    }
  }
  EXPECT_EQ(all_reduce_gradients(s.model.parameters(), bucket), expected);
  EXPECT_EQ(counters().get("all_reduce", Phase::communication).calls, expected);
}

}  // namespace
}  // namespace reckon

int main(int argc, char** argv) {
  reckon::comm_init(&argc, &argv);
  reckon::set_num_threads(1);
  ::testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  const int any = static_cast<int>(reckon::all_reduce_sum_scalar(failed != 0 ? 1.0 : 0.0));
  reckon::comm_finalize();
  return any != 0 ? 1 : 0;
}
