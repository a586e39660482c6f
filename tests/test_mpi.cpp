// Data parallelism over MPI (stage 0 and the ZeRO stages), run by ctest as `mpirun -np 2 test_mpi` (one OpenMP thread
// per rank): 2 ranks with global batch B reproduce the single-process run with batch B — losses within 1e-6 relative
// per step over 20 steps (float32; only the summation order of the gradient average differs) — and every rank holds
// bit-identical parameters after every step; the all-reduce traffic is the gradients' bytes.
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
  TrainingSession ddp(local, true);
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

// ZeRO stages 1, 2, 3 in every precision: each rank keeps AdamW's state (1), and its gradients (2), and its
// parameters (3) for its 1/N of the flat parameters only, yet every rank ends every step with the same parameters
// as stage 0, bit for bit (the same kernel per element; the same float32 sums of two ranks' gradients, rounded
// once), so the losses are stage 0's exactly. Between steps, each sharded category holds only the shard.
class ZeroStages : public ::testing::TestWithParam<std::tuple<int64_t, Precision>> {};

TEST_P(ZeroStages, EqualStage0BitForBitWithAShardOfTheState) {
  const auto [stage, precision] = GetParam();
  if (precision != Precision::fp32 && !bf16_matmul_unavailable_reason().empty())
    GTEST_SKIP() << bf16_matmul_unavailable_reason();
  const int ranks = comm_size(), rank = comm_rank();
  ASSERT_GE(ranks, 2);
  TrainConfig c = preset_config("tiny");
  c.model.batch_size = 2;  // per rank
  c.model.precision = precision;
  c.model.position = Position::learned;
  TrainConfig cz = c;
  cz.model.zero_stage = stage;
  const MemoryStats start = tracker().stats();
  TrainingSession stage0(c, true);
  const MemoryStats after0 = tracker().stats();
  TrainingSession sharded(cz, true);
  ZeroOptimizer* zero = sharded.optimizer.zero();
  ASSERT_NE(zero, nullptr);
  TokenData data = TokenData::random(c.model.vocab_size, 3);
  std::vector<Parameter>& p0 = stage0.model.parameters();
  const std::vector<std::pair<int, int>> units = sharded.model.units();
  for (int64_t step = 0; step < 6; ++step) {
    data.fill_batch_rows(stage0.tokens, stage0.targets, step, rank * 2, ranks * 2);
    data.fill_batch_rows(sharded.tokens, sharded.targets, step, rank * 2, ranks * 2);
    const double l0 = stage0.step(), lz = sharded.step();
    EXPECT_EQ(l0, lz) << "step " << step + 1;
    for (size_t u = 0; u < units.size(); ++u) {
      for (int i = units[u].first; i < units[u].second; ++i) {
        const Tensor& a = p0[static_cast<size_t>(i)].value;
        const Tensor b = zero->full_value(static_cast<size_t>(i));  // stage 3 holds shards: assembled to compare
        const int64_t bytes = a.numel() * dtype_bytes(a.dtype());
        ASSERT_EQ(std::memcmp(a.raw_data(), b.raw_data(), static_cast<size_t>(bytes)), 0)
            << p0[static_cast<size_t>(i)].name << " after step " << step + 1;
        // … and every rank holds rank 0's bytes.
        std::vector<char> theirs(static_cast<const char*>(b.raw_data()),
                                 static_cast<const char*>(b.raw_data()) + bytes);
        broadcast_from_rank0(theirs.data(), bytes);
        ASSERT_EQ(std::memcmp(b.raw_data(), theirs.data(), static_cast<size_t>(bytes)), 0)
            << p0[static_cast<size_t>(i)].name << " differs from rank 0's on rank " << rank;
      }
    }
  }
  // What this rank holds between steps, per category: stage 0 holds every element; the sharded run its owned
  // elements (+ 64-byte rounding per segment tensor) wherever the stage shards.
  const MemoryStats end = tracker().stats();
  auto held = [](const MemoryStats& a, const MemoryStats& b, Category c) {
    return a[c].allocated_bytes.current - b[c].allocated_bytes.current;
  };
  const int64_t n = stage0.model.num_parameters(), tensors = static_cast<int64_t>(p0.size());
  const auto [lo, hi] = owned_range(n, rank, ranks);
  const int64_t owned = hi - lo;
  EXPECT_EQ(static_cast<int64_t>(all_reduce_sum_scalar(static_cast<double>(owned))), n);
  const DTypePlan plan = c.model.dtypes();
  // Stage 0's AdamW state (created at its first step): m, v (and the master) of every parameter.
  int64_t state0 = 0;
  for (const Parameter& p : p0) state0 += (plan.master_weights ? 3 : 2) * aligned_size(4 * p.numel);
  auto expect_shard = [&](Category cat, int64_t bytes_per_element, int64_t tensors_per_segment) {
    const bool state = cat == Category::optimizer_state;
    const int64_t full = state ? state0 : held(after0, start, cat);
    const int64_t shard = held(end, after0, cat) - (state ? state0 : 0);
    EXPECT_GE(full, bytes_per_element * n) << category_name(cat);
    EXPECT_GE(shard, bytes_per_element * owned) << category_name(cat);
    EXPECT_LE(shard, bytes_per_element * owned + tensors_per_segment * 64 * tensors) << category_name(cat);
  };
  expect_shard(Category::optimizer_state, plan.master_weights ? 12 : 8, plan.master_weights ? 3 : 2);
  if (stage >= 2)
    expect_shard(Category::gradient, dtype_bytes(plan.grad), 1);
  else
    EXPECT_EQ(held(end, after0, Category::gradient), held(after0, start, Category::gradient));
  if (stage == 3)
    expect_shard(Category::parameter, dtype_bytes(plan.param), 1);
  else
    EXPECT_EQ(held(end, after0, Category::parameter), held(after0, start, Category::parameter));
}

INSTANTIATE_TEST_SUITE_P(AllStagesAndPrecisions, ZeroStages,
                         ::testing::Combine(::testing::Values(int64_t{1}, int64_t{2}, int64_t{3}),
                                            ::testing::Values(Precision::fp32, Precision::amp_bf16, Precision::bf16)),
                         [](const auto& info) {
                           const char* p = std::get<1>(info.param) == Precision::fp32       ? "fp32"
                                           : std::get<1>(info.param) == Precision::amp_bf16 ? "amp_bf16"
                                                                                            : "bf16";
                           return "stage" + std::to_string(std::get<0>(info.param)) + "_" + p;
                         });

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
  TrainingSession single(global), ddp(local, true);
  TokenData data = TokenData::random(global.model.vocab_size, 5);
  for (int64_t step = 0; step < 10; ++step) {
    data.fill_batch(single.tokens, single.targets, step);
    data.fill_batch_rows(ddp.tokens, ddp.targets, step, rank * 2, global.model.batch_size);
    const double expected = single.step(), loss = ddp.step();
    EXPECT_LE(std::abs(loss - expected), 0.01 * expected) << "step " << step + 1;
    for (const Parameter& p : ddp.model.parameters()) {
      const int64_t bytes = p.value.numel() * 2;
      std::vector<char> mine(static_cast<const char*>(p.value.raw_data()),
                             static_cast<const char*>(p.value.raw_data()) + bytes);
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
