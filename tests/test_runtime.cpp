// runtime/: tracking allocator, tensors, counters, oneDNN matmul.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "runtime/allocator.h"
#include "runtime/ledger.h"
#include "runtime/bf16.h"
#include "runtime/onednn.h"
#include "runtime/counters.h"
#include "runtime/machine.h"
#include "runtime/kernel_isa.h"
#include "runtime/matmul.h"
#include "runtime/simd_math.h"
#include "runtime/tensor.h"
#include "runtime/utf8.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using testing_ref::expect_invalid;

constexpr int kParam = static_cast<int>(Category::parameter);
constexpr int kGrad = static_cast<int>(Category::gradient);
constexpr int kAct = static_cast<int>(Category::activation);
constexpr int kTemp = static_cast<int>(Category::temporary);

// ------------------------------------------------------------------------------------------------ allocator

// runtime/utf8: valid UTF-8 comes back unchanged; each byte outside a well-formed sequence (RFC 3629's table:
// overlong forms, surrogates, above U+10FFFF, truncated or stray continuation bytes) becomes \xHH.
TEST(Utf8, InvalidBytesEscapedValidTextUnchanged) {
  for (const std::string valid : {"", "plain/path.txt", "caf\xc3\xa9", "\xe2\x80\x94 dash", "\xf0\x9f\x98\x80",
                                  "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "back\\slash"}) {
    EXPECT_EQ(escape_invalid_utf8(valid), valid);
  }
  EXPECT_EQ(escape_invalid_utf8("\xff\xfe.txt"), "\\xFF\\xFE.txt");
  EXPECT_EQ(escape_invalid_utf8("\xc0\xaf"), "\\xC0\\xAF");                    // overlong '/'
  EXPECT_EQ(escape_invalid_utf8("\xe0\x80\xaf"), "\\xE0\\x80\\xAF");           // overlong, 3 bytes
  EXPECT_EQ(escape_invalid_utf8("\xed\xa0\x80"), "\\xED\\xA0\\x80");           // a surrogate (U+D800)
  EXPECT_EQ(escape_invalid_utf8("\xf4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(escape_invalid_utf8("ok\xc3"), "ok\\xC3");                         // truncated at the end
  EXPECT_EQ(escape_invalid_utf8("\x80x\xc3\xa9"), "\\x80x\xc3\xa9");           // a stray continuation byte
  EXPECT_EQ(escape_invalid_utf8("a\\b\xff"), "a\\\\b\\xFF");  // a backslash doubled once the text had to change
}

TEST(Allocator, ScriptedSequenceExactStats) {
  TrackingAllocator a;  // a private instance: exact numbers, no other allocations mixed in
  void* p1 = a.allocate(1000, Category::parameter, "w");       // 1024 allocated
  void* p2 = a.allocate(64, Category::activation, "act.0");    // 64
  void* p3 = a.allocate(4097, Category::activation, "act.1");  // 4160
  a.free(p2);
  void* p4 = a.allocate(100, Category::temporary, "tmp");  // 128: total 1024+4160+128 = 5312 (peak)
  a.free(p3);
  a.free(p4);
  void* p5 = a.allocate(2048, Category::gradient, "g");  // 1024 + 2048 = 3072 < peak

  const MemoryStats s = a.stats();
  EXPECT_EQ(s.total.allocated_bytes.current, 1024 + 2048);
  EXPECT_EQ(s.total.allocated_bytes.peak, 5312);
  EXPECT_EQ(s.total.allocated_bytes.allocated, 1024 + 64 + 4160 + 128 + 2048);
  EXPECT_EQ(s.total.allocated_bytes.freed, 64 + 4160 + 128);
  EXPECT_EQ(s.total.requested_bytes.current, 1000 + 2048);
  EXPECT_EQ(s.total.requested_bytes.peak, 1000 + 4097 + 100);
  EXPECT_EQ(s.total.num_allocs, 5);
  EXPECT_EQ(s.total.num_frees, 3);
  EXPECT_EQ(s.by_category[kAct].allocated_bytes.peak, 64 + 4160);
  EXPECT_EQ(s.by_category[kAct].allocated_bytes.current, 0);
  EXPECT_EQ(s.by_category[kTemp].allocated_bytes.peak, 128);
  EXPECT_EQ(s.by_category[kGrad].allocated_bytes.current, 2048);
  // At the global peak: parameter 1024, activation 4160 (act.0 already freed), temporary 128, no gradient.
  EXPECT_EQ(s.peak_breakdown[kParam], 1024);
  EXPECT_EQ(s.peak_breakdown[kAct], 4160);
  EXPECT_EQ(s.peak_breakdown[kTemp], 128);
  EXPECT_EQ(s.peak_breakdown[kGrad], 0);

  const std::vector<LiveBlock> at_peak = a.live_at_peak();
  ASSERT_EQ(at_peak.size(), 3u);
  EXPECT_EQ(at_peak[0].name, "act.1");
  EXPECT_EQ(at_peak[0].requested_bytes, 4097);
  EXPECT_EQ(at_peak[0].allocated_bytes, 4160);
  EXPECT_EQ(at_peak[1].name, "w");
  EXPECT_EQ(at_peak[2].name, "tmp");
  EXPECT_EQ(at_peak[2].category, Category::temporary);

  const std::vector<LiveBlock> now = a.live_now();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_EQ(now[0].name, "g");
  EXPECT_EQ(a.live_bytes_with_prefix("act."), 0);
  EXPECT_EQ(a.live_bytes_with_prefix("w"), 1024);

  const std::vector<MemoryEvent> tl = a.timeline();
  ASSERT_EQ(tl.size(), 8u);
  EXPECT_EQ(tl[0].delta_bytes, 1024);
  EXPECT_EQ(tl[3].delta_bytes, -64);
  EXPECT_EQ(a.event_name(tl[3]), "act.0");
  for (size_t i = 1; i < tl.size(); ++i) EXPECT_GE(tl[i].time_ns, tl[i - 1].time_ns);
  a.free(p1);
  a.free(p5);
}

TEST(Allocator, ResetPeakStatsMovesThePeakMoment) {
  TrackingAllocator a;
  void* big = a.allocate(1 << 20, Category::activation, "big");
  a.free(big);
  void* w = a.allocate(640, Category::parameter, "w");
  a.reset_peak_stats();
  MemoryStats s = a.stats();
  EXPECT_EQ(s.total.allocated_bytes.peak, 640);
  EXPECT_EQ(s.by_category[kAct].allocated_bytes.peak, 0);
  EXPECT_EQ(s.peak_breakdown[kParam], 640);
  EXPECT_EQ(s.peak_breakdown[kAct], 0);
  void* g = a.allocate(64, Category::gradient, "g");
  s = a.stats();
  EXPECT_EQ(s.total.allocated_bytes.peak, 704);
  EXPECT_EQ(s.peak_breakdown[kGrad], 64);
  const auto at_peak = a.live_at_peak();
  ASSERT_EQ(at_peak.size(), 2u);
  EXPECT_EQ(at_peak[0].name, "w");
  EXPECT_EQ(at_peak[1].name, "g");
  a.free(w);
  a.free(g);
}

TEST(Allocator, ClearTimelineKeepsLiveBlocksForReplay) {
  TrackingAllocator a;
  void* w = a.allocate(128, Category::parameter, "w");
  void* t = a.allocate(64, Category::temporary, "t");
  a.free(t);
  a.clear_timeline();
  EXPECT_TRUE(a.timeline().empty());
  void* x = a.allocate(256, Category::activation, "x");
  const auto at_peak = a.live_at_peak();
  ASSERT_EQ(at_peak.size(), 2u);
  EXPECT_EQ(at_peak[0].name, "x");
  EXPECT_EQ(at_peak[1].name, "w");
  EXPECT_EQ(a.stats().total.allocated_bytes.peak, 384);
  a.free(w);
  a.free(x);
}

// The machine's probes allocate untracked: the statistics, the timeline and the peak are what they were before,
// and a block allocated untracked is freed as such even after tracking resumed.
TEST(Allocator, ProbesAndUntrackedScopesLeaveTheStatisticsAlone) {
  const MemoryStats before = tracker().stats();
  const size_t events_before = tracker().timeline().size();
  EXPECT_GT(measure_bandwidth_gbs(0.01), 0.0);
  EXPECT_GT(measure_matmul_gflops(0.01), 0.0);
  void* kept = nullptr;
  {
    const UntrackedScope untracked;
    kept = tracker().allocate(1 << 20, Category::temporary, "untracked.kept");
  }
  Tensor tracked = Tensor::zeros({16}, Category::temporary, "tracked");
  tracker().free(kept);
  const MemoryStats after = tracker().stats();
  EXPECT_EQ(after.total.allocated_bytes.peak,
            std::max(before.total.allocated_bytes.peak, before.total.allocated_bytes.current + 64));
  EXPECT_EQ(after.total.num_allocs, before.total.num_allocs + 1);  // `tracked` alone
  EXPECT_EQ(after.total.allocated_bytes.allocated, before.total.allocated_bytes.allocated + 64);
  EXPECT_EQ(tracker().timeline().size(), events_before + 1);
  EXPECT_FALSE(tracker().untracked());
}

TEST(Allocator, AlignmentAndRounding) {
  TrackingAllocator a;
  for (int64_t bytes : {1, 3, 63, 64, 65, 1000, 4096, 123457}) {
    void* p = a.allocate(bytes, Category::temporary, "t");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << bytes;
    EXPECT_EQ(a.stats().total.allocated_bytes.current, (bytes + 63) / 64 * 64);
    a.free(p);
  }
  EXPECT_EQ(aligned_size(1), 64);
  EXPECT_EQ(aligned_size(64), 64);
  EXPECT_EQ(aligned_size(65), 128);
}

TEST(Allocator, RejectsBadSizes) {
  TrackingAllocator a;
  expect_invalid([&] { a.allocate(0, Category::temporary, "t"); }, {"allocation size", "0", "[1,"});
  expect_invalid([&] { a.allocate(-5, Category::temporary, "t"); }, {"-5", "allowed range"});
  expect_invalid([&] { a.allocate(INT64_MAX, Category::temporary, "t"); }, {"allowed range"});
  EXPECT_EQ(a.stats().total.num_allocs, 0);
}

// --------------------------------------------------------------------------------------------------- tensor

TEST(Tensor, CategoryNameShapeAndStrides) {
  const int64_t before = tracker().stats().by_category[kAct].allocated_bytes.current;
  {
    Tensor t = Tensor::zeros({2, 3, 5}, Category::activation, "layers.3.attn.probs");
    EXPECT_EQ(t.name(), "layers.3.attn.probs");
    EXPECT_EQ(t.category(), Category::activation);
    EXPECT_EQ(t.numel(), 30);
    EXPECT_EQ(t.storage_bytes(), 120);
    EXPECT_EQ(t.stride(0), 15);
    EXPECT_EQ(t.stride(-1), 1);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
    EXPECT_EQ(tracker().stats().by_category[kAct].allocated_bytes.current, before + 128);
    EXPECT_EQ(tracker().live_bytes_with_prefix("layers.3.attn.probs"), 128);

    Tensor tt = t.transpose(-2, -1);  // a view: no new allocation
    EXPECT_EQ(tt.shape(), (Shape{2, 5, 3}));
    EXPECT_EQ(tt.strides(), (Shape{15, 1, 5}));
    EXPECT_FALSE(tt.is_contiguous());
    EXPECT_EQ(tt.data(), t.data());
    Tensor v = t.view({6, 5});
    EXPECT_EQ(v.shape(), (Shape{6, 5}));
    EXPECT_EQ(tracker().stats().by_category[kAct].allocated_bytes.current, before + 128);
    t.reset();  // views keep the storage alive
    EXPECT_EQ(tracker().stats().by_category[kAct].allocated_bytes.current, before + 128);
  }
  EXPECT_EQ(tracker().stats().by_category[kAct].allocated_bytes.current, before);
}

TEST(Tensor, StridedViewsAndFill) {
  Tensor t = Tensor::zeros({4, 6}, Category::temporary, "t");
  Tensor col = t.as_strided({4, 2}, {6, 1}, 3);  // columns 3..4 of every row
  col.fill(7.0f);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 6; ++c) EXPECT_EQ(t.data()[r * 6 + c], (c == 3 || c == 4) ? 7.0f : 0.0f);
  expect_invalid([&] { t.as_strided({4, 2}, {6, 1}, 5); }, {"as_strided", "reaches element 24"});
  expect_invalid([&] { t.transpose(0, 1).view({24}); }, {"not contiguous"});
  expect_invalid([&] { t.view({5, 5}); }, {"25 elements", "24"});
}

// zero_ splits large tensors over the threads in 4 KiB spans: a size that is no multiple of a page or of the
// thread count, inside a wider buffer, is zeroed to its last byte and not one past it.
TEST(Tensor, ZeroIsExactAtEveryThreadSplit) {
  const int64_t n = (int64_t{3} << 20) / 2 + 4097;  // > the serial threshold in bytes (bf16), odd pages
  Tensor buffer = Tensor::empty({n + 2}, Category::temporary, "buffer", DType::bf16);
  buffer.fill(3.0f);
  Tensor inner = buffer.as_strided({n}, {1}, 1);
  inner.zero_();
  const bf16* b = buffer.data_bf16();
  EXPECT_EQ(to_float(b[0]), 3.0f);
  EXPECT_EQ(to_float(b[n + 1]), 3.0f);
  int64_t nonzero = 0;
  for (int64_t i = 1; i <= n; ++i) nonzero += b[i].bits != 0;
  EXPECT_EQ(nonzero, 0);
  expect_invalid(
      [&] {
        Tensor::zeros({4, 6}, Category::temporary, "t").transpose(0, 1).zero_();
      },
      {"zero_", "not contiguous"});
}

TEST(Tensor, RejectsBadShapes) {
  const int64_t allocs = tracker().stats().total.num_allocs;
  expect_invalid(
      [] {
        Tensor::empty({2, 0, 3}, Category::activation, "x");
      },
      {"tensor 'x'", "dim 1 is 0", "allowed range is [1,"});
  expect_invalid([] { Tensor::empty({-4}, Category::activation, "x"); }, {"dim 0 is -4"});
  expect_invalid([] { Tensor::empty({}, Category::activation, "x"); }, {"number of dims is 0", "[1, 4]"});
  expect_invalid([] { Tensor::empty({1, 1, 1, 1, 1}, Category::activation, "x"); }, {"number of dims is 5"});
  expect_invalid(
      [] {
        Tensor::empty({1LL << 40, 1LL << 40}, Category::activation, "x");
      },
      {"more elements than the allowed"});
  expect_invalid(
      [] {
        Tensor::empty({3037000500LL, 3037000500LL, 4}, Category::activation, "x");
      },
      {"more elements than the allowed"});
  EXPECT_EQ(tracker().stats().total.num_allocs, allocs);  // nothing was allocated
}

// Resident set size of this process, from /proc/self/statm.
int64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST(Tensor, TrackedBytesMatchProcessRss) {
  const int64_t rss_before = rss_bytes();
  const int64_t tracked_before = tracker().stats().total.allocated_bytes.current;
  std::vector<Tensor> tensors;
  for (int i = 0; i < 8; ++i) {  // 8 x 32 MiB = 256 MiB, every page touched by zeros()
    tensors.push_back(Tensor::zeros({8, 1024, 1024}, Category::activation, "rss.block." + std::to_string(i)));
  }
  const int64_t tracked = tracker().stats().total.allocated_bytes.current - tracked_before;
  const int64_t grown = rss_bytes() - rss_before;
  EXPECT_EQ(tracked, 256LL << 20);
  // Also holds under ASan: the shadow of addressable memory stays zero and its pages are never touched.
  const double expected = static_cast<double>(tracked);
  EXPECT_NEAR(static_cast<double>(grown), expected, 0.05 * expected)
      << "RSS grew " << grown << " bytes for " << tracked << " tracked";
}

// -------------------------------------------------------------------------------------------------- counters

TEST(Counters, PhasesAndTotals) {
  Counters& c = counters();
  c.reset();
  {
    PhaseScope fwd(Phase::forward);
    OpRecord r("op_a");
    r.count.other_flops = 10;
    r.count.bytes_read = 40;
  }
  {
    PhaseScope bwd(Phase::backward);
    for (int i = 0; i < 3; ++i) {
      OpRecord r("op_a");
      r.count.matmul_flops = 100;
      r.count.bytes_written = 8;
    }
    EXPECT_EQ(c.phase(), Phase::backward);
  }
  EXPECT_EQ(c.phase(), Phase::forward);
  EXPECT_EQ(c.get("op_a", Phase::forward).calls, 1);
  EXPECT_EQ(c.get("op_a", Phase::forward).other_flops, 10);
  EXPECT_EQ(c.get("op_a", Phase::backward).calls, 3);
  EXPECT_EQ(c.get("op_a", Phase::backward).matmul_flops, 300);
  EXPECT_EQ(c.get("op_a", Phase::backward).bytes_written, 24);
  EXPECT_EQ(c.get("op_a", Phase::optimizer).calls, 0);
  EXPECT_EQ(c.total().flops(), 310);
  EXPECT_EQ(c.phase_total(Phase::backward).flops(), 300);
  EXPECT_GE(c.get("op_a", Phase::backward).seconds, 0.0);
  c.reset();
}

struct MatmulCase {
  int64_t batch, m, k, n;
  bool a_t, b_t;  // operand stored transposed (the view is a transpose of a contiguous buffer)
  float alpha;
  bool accumulate;
};

// Fills with values in [-1, 1) from a fixed seed.
void fill_random(const Tensor& t, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

// A (batch, rows, cols) operand, optionally stored transposed as (batch, cols, rows).
Tensor operand(int64_t batch, int64_t rows, int64_t cols, bool transposed, const char* name, uint32_t seed) {
  Tensor storage = transposed ? Tensor::empty({batch, cols, rows}, Category::temporary, name)
                              : Tensor::empty({batch, rows, cols}, Category::temporary, name);
  fill_random(storage, seed);
  return transposed ? storage.transpose(-2, -1) : storage;
}

class MatmulSweep : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulSweep, MatchesFloat64ReferenceAndCountsExactly) {
  const MatmulCase c = GetParam();
  Tensor a = operand(c.batch, c.m, c.k, c.a_t, "a", 1);
  Tensor b = operand(c.batch, c.k, c.n, c.b_t, "b", 2);
  Tensor dst = Tensor::empty({c.batch, c.m, c.n}, Category::temporary, "dst");
  Tensor ref = Tensor::empty({c.batch, c.m, c.n}, Category::temporary, "ref");
  fill_random(dst, 3);
  fill_random(ref, 3);  // same prior contents, for accumulate

  counters().reset();
  matmul(dst, a, b, "mm_test", c.alpha, c.accumulate);
  matmul_reference(ref, a, b, c.alpha, c.accumulate);

  double err2 = 0.0, ref2 = 0.0;
  for (int64_t i = 0; i < dst.numel(); ++i) {
    const double d = static_cast<double>(dst.data()[i]) - ref.data()[i];
    err2 += d * d;
    ref2 += static_cast<double>(ref.data()[i]) * ref.data()[i];
  }
  const double rel_l2 = std::sqrt(err2 / ref2);
  const double tol = 2.0 * FLT_EPSILON * std::max(1.0, std::log2(static_cast<double>(c.k)));
  EXPECT_LE(rel_l2, tol) << "batch " << c.batch << " m " << c.m << " k " << c.k << " n " << c.n;

  const OpCount count = counters().get("mm_test", Phase::forward);
  const int64_t mn = c.batch * c.m * c.n;
  EXPECT_EQ(count.calls, 1);
  EXPECT_EQ(count.matmul_flops, 2 * c.batch * c.m * c.n * c.k);
  EXPECT_EQ(count.other_flops, (c.alpha != 1.0f ? mn : 0) + (c.accumulate ? mn : 0));
  EXPECT_EQ(count.bytes_read, 4 * c.batch * (c.m * c.k + c.k * c.n + (c.accumulate ? c.m * c.n : 0)));
  EXPECT_EQ(count.bytes_written, 4 * mn);
  counters().reset();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulSweep,
    ::testing::Values(MatmulCase{1, 1, 7, 13, false, false, 1.0f, false},
                      MatmulCase{1, 1, 1, 1, false, false, 1.0f, false},
                      MatmulCase{1, 13, 7, 1, false, true, 1.0f, false},
                      MatmulCase{1, 64, 128, 384, false, true, 1.0f, false},   // linear forward
                      MatmulCase{1, 64, 384, 128, false, false, 1.0f, false},  // linear dX
                      MatmulCase{1, 384, 64, 128, true, false, 1.0f, true},    // linear dW, accumulated
                      MatmulCase{1, 33, 65, 17, true, true, 1.0f, false},
                      MatmulCase{3, 17, 9, 17, false, true, 0.125f, false},  // attention QK^T, scaled
                      MatmulCase{5, 31, 31, 6, false, false, 1.0f, true},
                      MatmulCase{2, 100, 1000, 3, true, false, -0.5f, true},
                      MatmulCase{1, 257, 511, 129, false, false, 1.0f, false}),
    [](const ::testing::TestParamInfo<MatmulCase>& info) {
      const MatmulCase& c = info.param;
      return fmt::format("b{}_m{}_k{}_n{}{}{}{}{}_{}", c.batch, c.m, c.k, c.n, c.a_t ? "_aT" : "", c.b_t ? "_bT" : "",
                         c.alpha != 1.0f ? "_scaled" : "", c.accumulate ? "_acc" : "", info.index);
    });

// bf16 operands (both), f32 or bf16 dst: against a float64 sum over the same bf16 values, element by element,
// with the bound rounding analysis gives — not a guessed tolerance. bf16 × bf16 products are exact in float32
// (8 + 8 significant bits), so the only float32 error is the accumulation: |error| ≤ γ_(K+2) · (|α|·Σ|a_k·b_k|
// + |prior|), γ_n = n·u / (1 − n·u), u = 2^-24 (K − 1 additions, the α scale, the accumulate add). A bf16 dst
// adds one rounding, half an ulp: 2^-8 · |result|.
Tensor bf16_operand(int64_t batch, int64_t rows, int64_t cols, bool transposed, const char* name, uint32_t seed) {
  const Tensor f = operand(batch, rows, cols, transposed, name, seed);
  Tensor storage = transposed ? Tensor::empty({batch, cols, rows}, Category::temporary, name, DType::bf16)
                              : Tensor::empty({batch, rows, cols}, Category::temporary, name, DType::bf16);
  const Tensor f_storage = transposed ? f.transpose(-2, -1) : f;  // contiguous again
  convert_to_bf16(storage.data_bf16(), f_storage.data(), f_storage.numel());
  return transposed ? storage.transpose(-2, -1) : storage;
}

class MatmulBf16Sweep : public ::testing::TestWithParam<std::tuple<MatmulCase, DType>> {};

TEST_P(MatmulBf16Sweep, WithinTheRoundingBoundOfFloat64AndCountsBytesAtTwo) {
  const auto [c, dst_dtype] = GetParam();
  const Tensor a = bf16_operand(c.batch, c.m, c.k, c.a_t, "a16", 1);
  const Tensor b = bf16_operand(c.batch, c.k, c.n, c.b_t, "b16", 2);
  Tensor dst = Tensor::empty({c.batch, c.m, c.n}, Category::temporary, "dst", dst_dtype);
  dst.fill(0.25f);  // the prior contents, for accumulate (exact in bf16)
  counters().reset();
  matmul(dst, a, b, "mm_bf16", c.alpha, c.accumulate);

  const double u = std::ldexp(1.0, -24), gamma = (c.k + 2) * u / (1 - (c.k + 2) * u);
  auto at = [](const Tensor& t, int64_t i, int64_t j, int64_t l) {
    const int64_t offset = i * t.stride(0) + j * t.stride(1) + l * t.stride(2);
    return static_cast<double>(to_float(t.data_bf16()[offset]));
  };
  int64_t outside = 0;
  double worst = 0;
  for (int64_t i = 0; i < c.batch; ++i)
    for (int64_t m = 0; m < c.m; ++m)
      for (int64_t n = 0; n < c.n; ++n) {
        double sum = 0, magnitude = 0;
        for (int64_t k = 0; k < c.k; ++k) {
          const double p = at(a, i, m, k) * at(b, i, k, n);
          sum += p;
          magnitude += std::abs(p);
        }
        const double prior = c.accumulate ? 0.25 : 0.0;
        const double exact = c.alpha * sum + prior;
        double bound = gamma * (std::abs(c.alpha) * magnitude + prior);
        const int64_t idx = (i * c.m + m) * c.n + n;
        double got;
        if (dst_dtype == DType::bf16) {
          got = to_float(dst.data_bf16()[idx]);
          bound += std::ldexp(std::abs(exact) + bound, -8);
        } else {
          got = dst.data()[idx];
        }
        const double err = std::abs(got - exact);
        worst = std::max(worst, bound > 0 ? err / bound : err);
        outside += err > bound;
      }
  EXPECT_EQ(outside, 0) << "worst error / bound " << worst;

  const OpCount count = counters().get("mm_bf16", Phase::forward);
  const int64_t mn = c.batch * c.m * c.n, dst_bytes = dst_dtype == DType::bf16 ? 2 : 4;
  EXPECT_EQ(count.matmul_flops, 2 * c.batch * c.m * c.n * c.k);
  EXPECT_EQ(count.bytes_read, c.batch * (2 * c.m * c.k + 2 * c.k * c.n + (c.accumulate ? dst_bytes * c.m * c.n : 0)));
  EXPECT_EQ(count.bytes_written, dst_bytes * mn);
  counters().reset();
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulBf16Sweep,
                         ::testing::Combine(::testing::Values(MatmulCase{1, 1, 7, 13, false, false, 1.0f, false},
                                                              MatmulCase{1, 64, 128, 384, false, true, 1.0f, false},
                                                              MatmulCase{1, 384, 64, 128, true, false, 1.0f, true},
                                                              MatmulCase{1, 33, 65, 17, true, true, 1.0f, false},
                                                              MatmulCase{3, 17, 9, 17, false, true, 0.125f, false},
                                                              MatmulCase{2, 100, 1000, 3, true, false, -0.5f, true},
                                                              MatmulCase{1, 257, 511, 129, false, false, 1.0f, false}),
                                            ::testing::Values(DType::f32, DType::bf16)),
                         [](const ::testing::TestParamInfo<std::tuple<MatmulCase, DType>>& info) {
                           const MatmulCase& c = std::get<0>(info.param);
                           return fmt::format("b{}_m{}_k{}_n{}{}{}{}{}_dst_{}_{}", c.batch, c.m, c.k, c.n,
                                              c.a_t ? "_aT" : "", c.b_t ? "_bT" : "", c.alpha != 1.0f ? "_scaled" : "",
                                              c.accumulate ? "_acc" : "",
                                              std::get<1>(info.param) == DType::bf16 ? "bf16" : "f32", info.index);
                         });

TEST(Matmul, Bf16OperandsMustMatchAndHaveACachedPrimitiveOfTheirOwn) {
  const Tensor a16 = Tensor::zeros({4, 8}, Category::temporary, "a16", DType::bf16);
  const Tensor b32 = Tensor::zeros({8, 4}, Category::temporary, "b32");
  const Tensor b16 = Tensor::zeros({8, 4}, Category::temporary, "b16", DType::bf16);
  const Tensor a32 = Tensor::zeros({4, 8}, Category::temporary, "a32");
  Tensor dst = Tensor::zeros({4, 4}, Category::temporary, "dst");
  Tensor dst16 = Tensor::zeros({4, 4}, Category::temporary, "dst16", DType::bf16);
  expect_invalid([&] { matmul(dst, a16, b32); },
                 {"a 'a16' is bfloat16 and b 'b32' is float32", "both float32 or both bfloat16"});
  expect_invalid([&] { matmul(dst16, a32, b32); }, {"dst 'dst16' is bfloat16", "when a and b are bfloat16"});
  const MatmulGeometry g32 = matmul_geometry(dst, a32, b32, 1.0f, false);
  const MatmulGeometry g16 = matmul_geometry(dst, a16, b16, 1.0f, false);
  EXPECT_FALSE(same_geometry(g32, g16));  // same shape, different dtypes: two primitives
  EXPECT_NE(matmul_impl_name(g16), "");
}

TEST(Matmul, FourDimStridedHeadViewsWithoutCopies) {
  // Attention style: Q and K live in (B, T, D) buffers; head h is the column block [h*dk, (h+1)*dk).
  const int64_t B = 2, T = 5, H = 3, dk = 4, D = H * dk;
  Tensor q = Tensor::empty({B, T, D}, Category::temporary, "q");
  Tensor k = Tensor::empty({B, T, D}, Category::temporary, "k");
  fill_random(q, 11);
  fill_random(k, 12);
  Tensor q_heads = q.as_strided({B, H, T, dk}, {T * D, dk, D, 1}, 0);
  Tensor kt_heads = k.as_strided({B, H, dk, T}, {T * D, dk, 1, D}, 0);
  Tensor scores = Tensor::empty({B, H, T, T}, Category::temporary, "scores");
  Tensor ref = Tensor::empty({B, H, T, T}, Category::temporary, "ref");
  matmul(scores, q_heads, kt_heads, "attn_test", 0.5f);
  // Independent reference straight from the (B, T, D) buffers.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          double s = 0;
          for (int64_t d = 0; d < dk; ++d) {
            s += static_cast<double>(q.data()[(b * T + i) * D + h * dk + d]) * k.data()[(b * T + j) * D + h * dk + d];
          }
          ref.data()[((b * H + h) * T + i) * T + j] = static_cast<float>(0.5 * s);
        }
  for (int64_t i = 0; i < scores.numel(); ++i) EXPECT_NEAR(scores.data()[i], ref.data()[i], 1e-6);
}

TEST(Matmul, PrimitiveCreatedOnceAndScratchpadTracked) {
  matmul_cache_clear();
  Tensor a = Tensor::zeros({64, 128}, Category::temporary, "a");
  Tensor w = Tensor::zeros({384, 128}, Category::temporary, "w");
  Tensor y = Tensor::zeros({64, 384}, Category::temporary, "y");
  Tensor wt = w.transpose(0, 1);
  matmul(y, a, wt);
  EXPECT_EQ(matmul_cache_size(), 1);
  matmul(y, a, wt);
  EXPECT_EQ(matmul_cache_size(), 1);  // same geometry: cache hit
  matmul(y, a, wt, "matmul", 2.0f);
  EXPECT_EQ(matmul_cache_size(), 2);

  // A dW-style product (transposed a, accumulate) asks oneDNN for a scratchpad; it must go through the
  // tracker as a temporary named after the op, and be gone after the call.
  Tensor dy = Tensor::zeros({64, 384}, Category::temporary, "dy");
  Tensor dw = Tensor::zeros({384, 128}, Category::temporary, "dw");
  const MatmulGeometry g = matmul_geometry(dw, dy.transpose(0, 1), a, 1.0f, true);
  const int64_t scratch = matmul_scratchpad_bytes(g);
  tracker().reset_peak_stats();
  const MemoryStats before = tracker().stats();
  matmul(dw, dy.transpose(0, 1), a, "linear_dw", 1.0f, true);
  const MemoryStats after = tracker().stats();
  EXPECT_EQ(after.by_category[kTemp].allocated_bytes.current, before.by_category[kTemp].allocated_bytes.current);
  if (scratch > 0) {
    EXPECT_EQ(after.total.num_allocs - before.total.num_allocs, 1);
    EXPECT_EQ(after.by_category[kTemp].allocated_bytes.peak - before.by_category[kTemp].allocated_bytes.current,
              aligned_size(scratch));
    const auto at_peak = tracker().live_at_peak();
    bool found = false;
    for (const auto& blk : at_peak) found = found || blk.name == "onednn.scratchpad.linear_dw";
    EXPECT_TRUE(found);
  } else {
    EXPECT_EQ(after.total.num_allocs, before.total.num_allocs);
  }
}

TEST(Matmul, RejectsBadShapesWithClearMessages) {
  Tensor a = Tensor::zeros({4, 5}, Category::temporary, "a");
  Tensor b = Tensor::zeros({6, 3}, Category::temporary, "b");
  Tensor d = Tensor::zeros({4, 3}, Category::temporary, "d");
  expect_invalid([&] { matmul(d, a, b); }, {"disagree on K", "a.size(-1) = 5", "b.size(-2) = 6"});
  Tensor b2 = Tensor::zeros({5, 3}, Category::temporary, "b2");
  Tensor d_bad = Tensor::zeros({4, 4}, Category::temporary, "d_bad");
  expect_invalid([&] { matmul(d_bad, a, b2); }, {"dst (4, 4) must be (..., 4, 3)"});
  Tensor a3 = Tensor::zeros({2, 4, 5}, Category::temporary, "a3");
  expect_invalid([&] { matmul(d, a3, b2); }, {"a has 3 dims"});
  Tensor b3 = Tensor::zeros({3, 5, 3}, Category::temporary, "b3");
  Tensor d3 = Tensor::zeros({2, 4, 3}, Category::temporary, "d3");
  expect_invalid([&] { matmul(d3, a3, b3); }, {"batch dim 0 is 2 in a, 3 in b"});
  Tensor v1 = Tensor::zeros({5}, Category::temporary, "v1");
  expect_invalid([&] { matmul(v1, v1, v1); }, {"dst has 1 dims", "[2, 4]"});
  Tensor dt = Tensor::zeros({3, 4}, Category::temporary, "dt");
  expect_invalid([&] { matmul(dt.transpose(0, 1), a, b2); }, {"last dim contiguous"});
}

TEST(Machine, MatmulTimedAtItsExactGeometry) {
  set_num_threads(2);
  // dW of a linear: a = dYᵀ (transposed view), accumulate into dst.
  const MatmulGeometry g = matmul_geometry_plain(1, 48, 96, 32, true, false, 1.0f, true);
  matmul_cache_clear();
  counters().reset();
  const int64_t live_before = tracker().stats().total.allocated_bytes.current;
  const double seconds = measure_matmul_seconds(g, 5);
  EXPECT_GT(seconds, 0.0);
  EXPECT_LT(seconds, 1.0);            // 295 kFLOP
  EXPECT_EQ(matmul_cache_size(), 1);  // exactly this geometry's primitive, created once
  measure_matmul_seconds(g, 1);
  EXPECT_EQ(matmul_cache_size(), 1);
  EXPECT_TRUE(counters().by_op().empty());  // a probe, not part of anything measured
  EXPECT_EQ(tracker().stats().total.allocated_bytes.current, live_before);
  expect_invalid([&] { measure_matmul_seconds(g, 0); }, {"repetitions", "0", "[1, 1000]"});
}

TEST(SimdMath, ExpWithinThreeEpsilonOfDoubleAndNeverInfinite) {
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.01171875f) {  // 14,933 points, not aligned with ln 2
    const double want = std::exp(static_cast<double>(x));
    const double rel = std::abs(exp_simd(x) - want) / want;
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 3 * FLT_EPSILON) << worst;
  EXPECT_GT(worst, 0.0);  // it is an approximation: the comparison can fail
  EXPECT_TRUE(std::isfinite(exp_simd(1000.0f)));
  EXPECT_GT(exp_simd(-1000.0f), 0.0f);
  EXPECT_EQ(exp_simd(0.0f), 1.0f);
}

TEST(SimdMath, TanhWithinThreeEpsilonOfDoubleOddAndSaturating) {
  double worst = 0.0;
  for (float x = -12.0f; x <= 12.0f; x += 0.00390625f * 1.5f) {  // both branches and the 0.625 switch
    const double want = std::tanh(static_cast<double>(x));
    if (want == 0.0) continue;
    worst = std::max(worst, std::abs(tanh_simd(x) - want) / std::abs(want));
    EXPECT_EQ(tanh_simd(-x), -tanh_simd(x));
  }
  for (float x : {1e-30f, 1e-8f, 1e-4f, 0.6249f, 0.6251f}) {
    worst = std::max(worst, std::abs(tanh_simd(x) - std::tanh(static_cast<double>(x))) / std::tanh(double(x)));
  }
  EXPECT_LT(worst, 3 * FLT_EPSILON) << worst;
  EXPECT_GT(worst, 0.0);
  EXPECT_EQ(tanh_simd(0.0f), 0.0f);
  EXPECT_EQ(tanh_simd(1000.0f), 1.0f);
  EXPECT_EQ(tanh_simd(-1000.0f), -1.0f);
}

TEST(SimdMath, MaxOfEveryLengthAndPosition) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-100.0f, 100.0f);
  for (int64_t n = 1; n <= 70; ++n) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) e = u(gen);
    EXPECT_EQ(max_of(x.data(), n), *std::max_element(x.begin(), x.end())) << n;
    for (int64_t at : {int64_t{0}, n / 2, n - 1}) {  // the maximum in the first lane, the middle, the tail
      std::vector<float> y = x;
      y[static_cast<size_t>(at)] = 1000.0f;
      EXPECT_EQ(max_of(y.data(), n), 1000.0f) << n << " at " << at;
      std::vector<bf16> h(y.size());  // bf16: the largest value, widened exactly
      for (size_t i = 0; i < y.size(); ++i) h[i] = to_bf16(y[i]);
      float expected = to_float(h[0]);
      for (bf16 e : h) expected = std::max(expected, to_float(e));
      EXPECT_EQ(max_of(h.data(), n), expected) << n << " at " << at;
      h[static_cast<size_t>(at)] = to_bf16(-1000.0f);
      expected = to_float(h[at == 0 ? 1 % n : 0]);
      for (bf16 e : h) expected = std::max(expected, to_float(e));
      EXPECT_EQ(max_of(h.data(), n), expected) << n << " at " << at << " (maximum removed)";
    }
  }
  std::vector<float> with_nan(40, -1.0f);
  with_nan[3] = std::nanf("");
  with_nan[37] = 5.0f;
  EXPECT_EQ(max_of(with_nan.data(), 40), 5.0f);
}

TEST(Machine, ThreadsValidatedAndReported) {
  expect_invalid([] { set_num_threads(0); }, {"threads", "0", "[1, 1024]"});
  set_num_threads(2);
  const MachineInfo info = machine_info();
  EXPECT_EQ(info.threads, 2);
  EXPECT_NE(info.onednn_version.find("2.6"), std::string::npos);
  EXPECT_FALSE(info.onednn_matmul_impl.empty());
  EXPECT_NE(machine_summary(info).find("threads"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------ bfloat16

// oneDNN's own f32 -> bf16 reorder, the conversion reckon's must match bit for bit.
std::vector<uint16_t> onednn_to_bf16(const std::vector<float>& src) {
  const dnnl::memory::dims dims{static_cast<int64_t>(src.size())};
  dnnl::memory from({dims, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a}, onednn_engine(),
                    const_cast<float*>(src.data()));
  std::vector<uint16_t> out(src.size());
  dnnl::memory to({dims, dnnl::memory::data_type::bf16, dnnl::memory::format_tag::a}, onednn_engine(), out.data());
  dnnl::reorder(from, to).execute(onednn_stream(), from, to);
  onednn_stream().wait();
  return out;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(BFloat16, ConversionIsBitIdenticalToOneDnnReorder) {
  // Every class of float32: random bit patterns (NaNs, infinities, denormals, both signs), exact ties at
  // every exponent, values next to the largest finite, and the special values by name.
  std::vector<float> src;
  std::mt19937 rng(20261126);
  for (int i = 0; i < (1 << 20); ++i) src.push_back(from_bits(rng()));
  for (uint32_t e = 0; e < 256; ++e) {
    for (uint32_t low : {0x8000u, 0x18000u, 0x7fffu, 0x8001u, 0xffffu, 0x10000u}) {
      src.push_back(from_bits((e << 23) | low));
      src.push_back(from_bits(0x80000000u | (e << 23) | low));
    }
  }
  for (float f : {0.0f, -0.0f, 1.0f, -1.0f, FLT_MAX, -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN(),
                  from_bits(0x7f7f8000u), from_bits(0x7f7fffffu), from_bits(0xffc00001u)}) {
    src.push_back(f);
  }
  const std::vector<uint16_t> expected = onednn_to_bf16(src);
  std::vector<bf16> vectorised(src.size());
  convert_to_bf16(vectorised.data(), src.data(), static_cast<int64_t>(src.size()));
  int64_t scalar_diffs = 0, vector_diffs = 0;
  for (size_t i = 0; i < src.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &src[i], sizeof u);
    if (to_bf16(src[i]).bits != expected[i] && scalar_diffs++ < 5) {
      ADD_FAILURE() << fmt::format("scalar: f32 bits {:#010x} -> {:#06x}, oneDNN {:#06x}", u, to_bf16(src[i]).bits,
                                   expected[i]);
    }
    if (vectorised[i].bits != expected[i] && vector_diffs++ < 5) {
      ADD_FAILURE() << fmt::format("{}: f32 bits {:#010x} -> {:#06x}, oneDNN {:#06x}", bf16_convert_isa(), u,
                                   vectorised[i].bits, expected[i]);
    }
  }
  EXPECT_EQ(scalar_diffs, 0);
  EXPECT_EQ(vector_diffs, 0);
  // Round to nearest even, by hand: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1 (even mantissa); 0x3f818000
  // is a tie between 0x3f81 and 0x3f82 -> 0x3f82 (even); the largest finite float rounds up to infinity.
  EXPECT_EQ(to_bf16(from_bits(0x3f808000u)).bits, 0x3f80);
  EXPECT_EQ(to_bf16(from_bits(0x3f818000u)).bits, 0x3f82);
  EXPECT_EQ(to_bf16(FLT_MAX).bits, 0x7f80);
}

TEST(BFloat16, VectorTailsAndExactWidening) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int64_t n = 0; n <= 70; ++n) {
    std::vector<float> src(static_cast<size_t>(n) + 1, 123.0f);  // one sentinel past the end
    for (int64_t i = 0; i < n; ++i) src[i] = normal(rng);
    std::vector<bf16> b(static_cast<size_t>(n) + 1, bf16{0xabcd});
    convert_to_bf16(b.data(), src.data(), n);
    EXPECT_EQ(b[n].bits, 0xabcd) << "wrote past n = " << n;
    std::vector<float> back(static_cast<size_t>(n) + 1, -7.0f);
    convert_to_float(back.data(), b.data(), n);
    EXPECT_EQ(back[n], -7.0f) << "wrote past n = " << n;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(b[i].bits, to_bf16(src[i]).bits) << "n " << n << " i " << i;
      ASSERT_EQ(back[i], to_float(b[i]));
      // bf16 keeps 8 significant bits: round to nearest is off by at most half an ulp, 2^-8 relative.
      EXPECT_LE(std::abs(back[i] - src[i]), std::ldexp(std::abs(src[i]), -8)) << src[i];
    }
  }
}

TEST(BFloat16, MachineLineSaysWhichIsaRunsBf16) {
  const MachineInfo info = machine_info();
  EXPECT_EQ(info.bf16_convert_isa, bf16_convert_isa());
  EXPECT_EQ(info.kernel_isa.substr(0, info.kernel_isa.find(' ')), kernel_isa_name(kernel_isa()));
  EXPECT_NE(machine_summary(info).find("kernels " + info.kernel_isa), std::string::npos);
  EXPECT_FALSE(info.onednn_bf16_matmul_impl.empty());
  EXPECT_NE(info.onednn_bf16_matmul_impl, info.onednn_matmul_impl);  // a bf16 kernel, not the f32 one
  EXPECT_NE(machine_summary(info).find("bf16 matmul " + info.onednn_bf16_matmul_impl), std::string::npos);
}

TEST(BFloat16, TensorsHoldTwoBytesPerElement) {
  const MemoryStats before = tracker().stats();
  {
    Tensor t = Tensor::zeros({3, 33}, Category::activation, "bf16.test", DType::bf16);
    EXPECT_EQ(t.storage_bytes(), 2 * 3 * 33);
    EXPECT_EQ(tracker().stats().total.allocated_bytes.current - before.total.allocated_bytes.current,
              256);       // 198 -> 64-rounded
    t.fill(1.00390625f);  // 1 + 2^-8: a tie, rounds to 1 (even)
    EXPECT_EQ(t.data_bf16()[98].bits, 0x3f80);
    expect_invalid([&] { t.data(); }, {"tensor 'bf16.test' is bfloat16, not float32"});
    EXPECT_EQ(t.transpose(0, 1).stride(0), 1);
    bool listed = false;  // the allocator records the dtype with the block
    for (const LiveBlock& b : tracker().live_now()) {
      if (b.name != "bf16.test") continue;
      listed = true;
      EXPECT_EQ(b.dtype, DType::bf16);
    }
    EXPECT_TRUE(listed);
  }
  EXPECT_STREQ(dtype_name(DType::bf16), "bfloat16");
  EXPECT_EQ(dtype_bytes(DType::bf16), 2);
}

}  // namespace
TEST(AllocationEvents, FirstDivergenceNamesTheEventOnBothSides) {
  const std::vector<AllocationEvent> a = {{"x", Category::activation, 64, true},
                                          {"y", Category::temporary, 128, true},
                                          {"y", Category::temporary, 128, false}};
  EXPECT_EQ(first_divergence(a, a).index, -1);
  std::vector<AllocationEvent> b = a;
  b[1].bytes = 192;  // same name, other size: a difference that equal peaks elsewhere could hide
  const EventDivergence d = first_divergence(a, b);
  EXPECT_EQ(d.index, 1);
  EXPECT_EQ(d.text,
            "event 1 of 3 measured / 3 analytic: measured alloc y (temporary, 128 B); analytic alloc y "
            "(temporary, 192 B)");
  b = a;
  b.pop_back();
  EXPECT_EQ(first_divergence(a, b).text,
            "event 2 of 3 measured / 2 analytic: measured free y (temporary, 128 B); analytic nothing (the sequence "
            "has ended)");
}

TEST(AllocationEvents, TimelineSinceClearWithNames) {
  tracker().clear_timeline();
  {
    Tensor t = Tensor::empty({10}, Category::activation, "events.t");
    Tensor u = Tensor::empty({20}, Category::temporary, "events.u", DType::bf16);
  }
  const std::vector<AllocationEvent> e = tracker().events();
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0], (AllocationEvent{"events.t", Category::activation, 64, true}));
  EXPECT_EQ(e[1], (AllocationEvent{"events.u", Category::temporary, 64, true}));
  EXPECT_EQ(e[2], (AllocationEvent{"events.u", Category::temporary, 64, false}));  // destroyed in reverse order
  EXPECT_EQ(e[3], (AllocationEvent{"events.t", Category::activation, 64, false}));
}

// The peak bookkeeping both the allocator and the replay use: the first moment the total reaches its peak keeps
// the breakdown and the event position; an equal total later moves neither; a category's own peak is separate.
TEST(PeakLedger, FirstMomentOfThePeakAndOwnCategoryPeaks) {
  PeakLedger<int64_t> l;
  EXPECT_TRUE(l.add(Category::activation, 100, 1));
  EXPECT_TRUE(l.add(Category::temporary, 50, 2));  // total 150: the peak, at event 2
  l.remove(Category::temporary, 50);
  EXPECT_FALSE(l.add(Category::gradient, 50, 4));  // total 150 again: not a new peak
  l.remove(Category::gradient, 50);
  EXPECT_FALSE(l.add(Category::temporary, 40, 6));  // 140
  EXPECT_EQ(l.peak_total(), 150);
  EXPECT_EQ(l.peak_event(), 2);
  EXPECT_EQ(l.peak_breakdown(Category::temporary), 50);
  EXPECT_EQ(l.peak_breakdown(Category::gradient), 0);
  EXPECT_EQ(l.category_peak(Category::gradient), 50);  // its own peak came later
  EXPECT_EQ(l.total(), 140);
  l.reset_peaks(6);
  EXPECT_EQ(l.peak_total(), 140);
  EXPECT_EQ(l.peak_event(), 6);
  EXPECT_EQ(l.category_peak(Category::gradient), 0);
  PeakLedger<CheckedInt> checked;
  checked.add(Category::activation, std::numeric_limits<int64_t>::max(), 1);
  EXPECT_THROW(checked.add(Category::activation, 1, 2), SizeOverflow);
}

}  // namespace reckon
