// Gradient accumulation (config field gradient_accumulation_steps, K): a step of K micro-batches of B rows is one
// batch of K·B rows — the same loss (the mean of the micro-batches' means) and the same gradients within float32's
// summation-order error (each row's output gradient is 1/(K·B·T) exactly as in the large batch; only the sums over
// rows split differently) — and K = 1 is the step as it was: zero_grad, forward, backward, AdamW, bit for bit. The
// memory a micro-batch needs does not grow with K (what it saves is freed in its own backward), measured and
// replayed; the counts are K micro-batches plus one optimizer step, by arithmetic on K = 1's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "estimators/flops.h"
#include "estimators/memory.h"
#include "model/data.h"
#include "optim/step.h"
#include "optim/zero.h"
#include "runtime/allocator.h"
#include "runtime/counters.h"

namespace reckon {
namespace {

TrainConfig small(int64_t batch, int64_t micro_batches, Precision precision = Precision::fp32, int64_t stage = 0) {
  TrainConfig c = preset_config("tiny");
  c.model.position = Position::learned;
  c.model.num_kv_heads = 2;
  c.model.batch_size = batch;
  c.model.gradient_accumulation_steps = micro_batches;
  c.model.precision = precision;
  c.model.zero_stage = stage;
  return c;
}

// Micro-batch k of `step`: rows k·B … of the step's K·B rows (as `reckon train` feeds them).
MicroBatchFill rows_of(TokenData& data, TrainingSession& run, int64_t step) {
  const int64_t b = run.tokens.size(0), all = b * run.model.config().micro_batches();
  return [&data, &run, step, b, all](int64_t k) { data.fill_batch_rows(run.tokens, run.targets, step, k * b, all); };
}

std::vector<float> widened(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  dispatch_floating(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(t.raw_data());
    for (int64_t i = 0; i < t.numel(); ++i) out[static_cast<size_t>(i)] = widen(p[i]);
  });
  return out;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  return std::vector<uint8_t>(p, p + t.numel() * dtype_bytes(t.dtype()));
}

TEST(Accumulation, OneMicroBatchIsTheStepAsItWasBitForBit) {
  for (Precision precision : {Precision::fp32, Precision::amp_bf16, Precision::bf16}) {
    const TrainConfig config = small(4, 1, precision);
    TrainingSession stepped(config), by_hand(config);
    TokenData data = TokenData::random(config.model.vocab_size, 3);
    for (int64_t step = 0; step < 3; ++step) {
      const double loss = stepped.step(rows_of(data, stepped, step));
      data.fill_batch(by_hand.tokens, by_hand.targets, step);
      by_hand.model.zero_grad();
      const double expected = by_hand.model.forward(by_hand.tokens, by_hand.targets);
      by_hand.model.backward();
      by_hand.optimizer.step();
      ASSERT_EQ(loss, expected) << precision_name(precision) << " step " << step;
    }
    for (size_t i = 0; i < stepped.model.parameters().size(); ++i) {
      EXPECT_EQ(bytes_of(stepped.model.parameters()[i].value), bytes_of(by_hand.model.parameters()[i].value))
          << precision_name(precision) << " " << stepped.model.parameters()[i].name;
    }
  }
}

// The step's gradients (stage 0 keeps them after the update) and loss: K = 4 micro-batches of 2 rows against one
// batch of 8, on the same rows. float32 gradients: each row's contribution is the same float; the sums over rows
// split into 4 differ by float32 rounding only (tolerance: 2⁻²⁰ of the tensor's largest entry). bf16 gradients are
// rounded once per micro-batch instead of once (tolerance: 4 bf16 roundings, 2⁻⁶).
TEST(Accumulation, MicroBatchesEqualOneBatchKTimesLarger) {
  for (Precision precision : {Precision::fp32, Precision::amp_bf16, Precision::bf16}) {
    TrainingSession big(small(8, 1, precision)), micro(small(2, 4, precision));
    TokenData data = TokenData::random(big.model.config().vocab_size, 7);
    for (int64_t step = 0; step < 3; ++step) {
      const double expected = big.step(rows_of(data, big, step));
      const double loss = micro.step(rows_of(data, micro, step));
      const double loss_tolerance = precision == Precision::fp32 ? 1e-6 : 1e-2;  // bf16: the weights drift apart
      EXPECT_NEAR(loss, expected, loss_tolerance * expected) << precision_name(precision) << " step " << step;
      if (step == 0) {
        EXPECT_NEAR(loss, expected, 1e-12 * expected) << "the same weights, the same rows";
      }
      if (step > 0) continue;  // after one update the bf16 weights may differ by a rounding: compare step 1's
      const double relative = precision == Precision::bf16 ? 1.0 / 64 : 1.0 / (1 << 20);
      for (size_t i = 0; i < big.model.parameters().size(); ++i) {
        const Parameter& p = big.model.parameters()[i];
        const std::vector<float> g1 = widened(p.grad), gk = widened(micro.model.parameters()[i].grad);
        float largest = 0, worst = 0;
        for (size_t j = 0; j < g1.size(); ++j) {
          largest = std::max(largest, std::fabs(g1[j]));
          worst = std::max(worst, std::fabs(g1[j] - gk[j]));
        }
        ASSERT_GT(largest, 0.0f) << p.name;
        EXPECT_LE(worst, relative * largest)
            << precision_name(precision) << " " << p.name << " (largest " << largest << ")";
      }
    }
  }
}

// Bit-exact where the order allows: the same micro-batch twice is the micro-batch once. Every contribution is
// exactly half (1/(2·B·T) against 1/(B·T), a power of two), and a gradient that each op adds as one finished sum
// (a matmul's dW: oneDNN's sum post-op adds the product to the accumulator; a norm's gain) gets half + half, exact.
// The embedding tables' backward adds each token's row into the accumulating table itself, so there the order of
// the additions changes with K: equal within float32 rounding (2⁻²⁰ of the largest entry).
TEST(Accumulation, TheSameMicroBatchTwiceIsItOnceBitForBit) {
  TrainingSession once(small(4, 1)), twice(small(4, 2));
  TokenData data = TokenData::random(once.model.config().vocab_size, 9);
  data.fill_batch(once.tokens, once.targets, 0);
  data.fill_batch(twice.tokens, twice.targets, 0);
  EXPECT_EQ(once.step(), twice.step());  // an empty fill: the batch tensors as they are, for both micro-batches
  int exact = 0;
  for (size_t i = 0; i < once.model.parameters().size(); ++i) {
    const Parameter& p = once.model.parameters()[i];
    const Tensor& g2 = twice.model.parameters()[i].grad;
    if (p.name == "tok_emb.weight" || p.name == "pos_emb.weight") {
      const std::vector<float> a = widened(p.grad), b = widened(g2);
      float largest = 0, worst = 0;
      for (size_t j = 0; j < a.size(); ++j) {
        largest = std::max(largest, std::fabs(a[j]));
        worst = std::max(worst, std::fabs(a[j] - b[j]));
      }
      EXPECT_LE(worst, largest / (1 << 20)) << p.name;
      continue;
    }
    EXPECT_EQ(bytes_of(p.grad), bytes_of(g2)) << p.name;
    ++exact;
  }
  EXPECT_EQ(exact, static_cast<int>(once.model.parameters().size()) - 2) << "all but the two tables";
}

// ZeRO-2 and -3 on one rank: each micro-batch's gradients go into the shard (the first copied, the later added),
// so the losses follow stage 0's with the same K within float32 rounding; stages 2 and 3 agree bit for bit.
TEST(Accumulation, ShardedGradientsAccumulateAsStageZeros) {
  std::vector<std::vector<double>> losses;
  for (int64_t stage : {0, 2, 3}) {
    TrainingSession run(small(2, 3, Precision::fp32, stage));
    TokenData data = TokenData::random(run.model.config().vocab_size, 13);
    losses.emplace_back();
    for (int64_t step = 0; step < 4; ++step) losses.back().push_back(run.step(rows_of(data, run, step)));
  }
  for (size_t s = 0; s < losses[0].size(); ++s) {
    EXPECT_NEAR(losses[1][s], losses[0][s], 1e-6 * losses[0][s]) << "step " << s;
    EXPECT_EQ(losses[2][s], losses[1][s]) << "step " << s;
  }
}

// What a micro-batch keeps is freed in its own backward: the step's peak does not grow with K, measured by the
// tracking allocator and replayed; and the counts are K micro-batches and one optimizer step — K = 1's forward and
// backward counts times K, AdamW's and zero_grad's once — plus, with sharded gradients, (K − 1) shard additions.
TEST(Accumulation, PeakDoesNotGrowAndCountsAreKMicroBatchesAndOneUpdate) {
  for (int64_t stage : {0, 2}) {
    const TrainConfig one = small(2, 1, Precision::fp32, stage), four = small(2, 4, Precision::fp32, stage);
    const StepMeasurement m1 = measure_steady_step(one), m4 = measure_steady_step(four);
    EXPECT_EQ(m4.memory.total.allocated_bytes.peak, m1.memory.total.allocated_bytes.peak) << "stage " << stage;
    EXPECT_EQ(estimate_step_memory(four.model).peak_total, m4.memory.total.allocated_bytes.peak) << "stage " << stage;
    const std::map<OpKey, OpCount> c1 = estimate_step_counts(one.model, one.optim),
                                   c4 = estimate_step_counts(four.model, four.optim);
    const TrainingSession session(one);
    int64_t elements = 0;
    for (const Parameter& p : session.model.parameters()) elements += p.numel;
    for (const auto& [key, count] : c4) {
      if (key.op == "grad_accumulate") {
        EXPECT_EQ(stage, 2);
        EXPECT_EQ(count.other_flops, 3 * elements) << "one add per gradient element per later micro-batch";
        EXPECT_EQ(count.bytes_written, 3 * 4 * elements);
        continue;
      }
      const OpCount& base = c1.at(key);
      const int64_t times = key.phase == Phase::forward || key.phase == Phase::backward ? 4 : 1;
      EXPECT_EQ(count.calls, times * base.calls) << key.op << " " << phase_name(key.phase);
      EXPECT_EQ(count.flops(), times * base.flops()) << key.op << " " << phase_name(key.phase);
      EXPECT_EQ(count.bytes_read, times * base.bytes_read) << key.op << " " << phase_name(key.phase);
    }
    // The runtime's counts are the same, op by op (the estimate replays two micro-batches and repeats the second).
    ASSERT_EQ(m4.counts.size(), c4.size());
    for (const auto& [key, count] : c4) {
      const OpCount& got = m4.counts.at(key);
      EXPECT_EQ(got.calls, count.calls) << key.op << " " << phase_name(key.phase);
      EXPECT_EQ(got.flops(), count.flops()) << key.op << " " << phase_name(key.phase);
      EXPECT_EQ(got.bytes_read + got.bytes_written, count.bytes_read + count.bytes_written) << key.op;
    }
  }
}

TEST(Accumulation, ConfigFieldRangeAndDescription) {
  TrainConfig c = preset_config("tiny");
  apply_override(c, "gradient_accumulation_steps=8");
  EXPECT_EQ(c.model.micro_batches(), 8);
  EXPECT_NE(describe(c.model).find("8 micro-batches a step"), std::string::npos);
  for (const char* bad :
       {"gradient_accumulation_steps=0", "gradient_accumulation_steps=-2", "gradient_accumulation_steps=65537",
        "gradient_accumulation_steps=2.5", "gradient_accumulation_steps=x"}) {
    TrainConfig d = preset_config("tiny");
    try {
      apply_override(d, bad);
      validate(d);
      ADD_FAILURE() << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("gradient_accumulation_steps"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("[1, 65536]"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace reckon
