// ops/flash_attention: the tiled causal attention against the float64 reference (forward) and central finite
// differences of it (backward), against reckon's naive attention, over a shape sweep that crosses the key
// block (T = 1, odd T, T < block, T = several blocks + a remainder, H = 1, d_k not a power of two, d_k = 1) and
// shares K/V heads (multi-query, groups of 2 and 3);
// counts against the documented formulas; no T×T buffer; bf16 storage within its rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>

#include "ops/attention.h"
#include "ops/flash_attention.h"
#include "runtime/counters.h"
#include "runtime/kernel_isa.h"
#include "runtime/machine.h"
#include "tests/reference.h"

namespace reckon {
namespace {

using namespace testing_ref;

struct Shape4 {
  int64_t b, t, d, h, kv = 0;  // d: q's width H·d_k; kv: key/value heads (0: = h)
  int64_t window = 0;          // sliding window (0: none)
  float cap = 0.0f;            // soft-capping (0: none)
  float alibi = 0.0f;          // ALiBi's alibi_bias_max (0: none)
};
void PrintTo(const Shape4& c, std::ostream* os) {
  *os << "B" << c.b << "_T" << c.t << "_D" << c.d << "_H" << c.h << "_KV" << (c.kv > 0 ? c.kv : c.h) << "_W" << c.window
      << "_cap" << c.cap << "_alibi" << c.alibi;
}

class FlashSweep : public ::testing::TestWithParam<Shape4> {
 protected:
  void SetUp() override {
    set_num_threads(2);
    counters().reset();
    counters().set_phase(Phase::forward);
  }
};

// Forward within float32 rounding of the float64 reference (2e-6 normwise, as the naive attention's test);
// backward within 1e-4 of central differences (h = 1e-6) of that reference; equal to the naive attention's
// output and gradients within the same bounds; FLOPs and bytes as documented; the largest allocation of the
// whole forward + backward is O(T·d_k) per thread, never T×T.
TEST_P(FlashSweep, MatchesReferenceNaiveAndCounts) {
  const Shape4 p = GetParam();
  const int64_t b = p.b, t = p.t, d = p.d, h = p.h, kvh = p.kv > 0 ? p.kv : p.h;
  const int64_t dk = d / h, dkv = kvh * dk;
  const AttentionShape sh{b, t, h, kvh, dk, p.window, p.cap, p.alibi};
  const AttentionScores rule{p.window, p.cap, p.alibi};
  const Vec q = random_vec(b * t * d, 1), k = random_vec(b * t * dkv, 2), v = random_vec(b * t * dkv, 3);
  const Vec r = random_vec(b * t * d, 4);
  const Tensor qt = tensor_from(q, {b, t, d}, Category::activation, "q");
  const Tensor kt = tensor_from(k, {b, t, dkv}, Category::activation, "k");
  const Tensor vt = tensor_from(v, {b, t, dkv}, Category::activation, "v");

  tracker().reset_peak_stats();
  const int64_t before = tracker().stats().total.allocated_bytes.current;
  FlashAttentionSaved saved;
  Tensor out = flash_attention_forward(saved, qt, kt, vt, h, kvh, "f.attn", rule);
  EXPECT_LE(rel_err(vec_from(out), attention_ref(q, k, v, b, t, d, h, kvh, p.window, p.cap, p.alibi)), 2e-6);
  EXPECT_EQ(tracker().live_bytes_with_prefix("f.attn.lse"), aligned_size(4 * b * h * t));

  counters().set_phase(Phase::backward);
  Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq");
  Tensor gk = Tensor::empty({b, t, dkv}, Category::temporary, "gk");
  Tensor gv = Tensor::empty({b, t, dkv}, Category::temporary, "gv");
  const Tensor gout = tensor_from(r, {b, t, d}, Category::temporary, "gctx");
  flash_attention_backward(gq, gk, gv, gout, saved);
  EXPECT_FALSE(saved.lse.defined() || saved.q.defined() || saved.out.defined());
  // Everything allocated beyond the inputs: out, lse, the gradients and workspaces — all O(B·T·D + threads·T·d_k).
  const int64_t threads = num_threads();
  const FlashAttentionBackwardTensors bt = flash_attention_backward_tensors(sh, DType::f32, threads);
  EXPECT_EQ(bt.partials.has_value(), kvh < h);
  if (bt.partials) {  // P parts per group: enough (batch, K/V head, part) units for every thread, at most g
    const int64_t parts = flash_backward_parts(sh, threads);
    EXPECT_EQ(parts, std::min(h / kvh, (threads + b * kvh - 1) / (b * kvh)));
    EXPECT_EQ(bt.partials->elements().value(), b * kvh * parts * 2 * t * dk);
  }
  const int64_t bound = aligned_size(4 * b * t * d) * 5 + aligned_size(4 * b * h * t) +
                        aligned_size(4 * threads * flash_backward_workspace_floats(t, dk, DType::f32)) +
                        (bt.partials ? aligned_size(4 * bt.partials->elements().value()) : 0) +
                        aligned_size(4 * threads * flash_forward_workspace_floats(t, dk, DType::f32));
  EXPECT_LE(tracker().stats().total.allocated_bytes.peak - before, bound);

  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return dot(attention_ref(qq, kk, vv, b, t, d, h, kvh, p.window, p.cap, p.alibi), r);
  };
  EXPECT_LE(rel_err(vec_from(gq), fd_grad([&](const Vec& x) { return loss(x, k, v); }, q)), 1e-4);
  EXPECT_LE(rel_err(vec_from(gk), fd_grad([&](const Vec& x) { return loss(q, x, v); }, k)), 1e-4);
  EXPECT_LE(rel_err(vec_from(gv), fd_grad([&](const Vec& x) { return loss(q, k, x); }, v)), 1e-4);

  // The naive attention on the same inputs: same output and gradients.
  AttentionSaved naive;
  counters().set_phase(Phase::forward);
  const Tensor out_naive = attention_forward(naive, qt, kt, vt, h, kvh, "n.attn", rule);
  Tensor nq = Tensor::empty({b, t, d}, Category::temporary, "nq");
  Tensor nk = Tensor::empty({b, t, dkv}, Category::temporary, "nk");
  Tensor nv = Tensor::empty({b, t, dkv}, Category::temporary, "nv");
  counters().set_phase(Phase::backward);
  attention_backward(nq, nk, nv, gout, naive);
  EXPECT_LE(rel_err(vec_from(out), vec_from(out_naive)), 2e-6);
  EXPECT_LE(rel_err(vec_from(gq), vec_from(nq)), 1e-5);
  EXPECT_LE(rel_err(vec_from(gk), vec_from(nk)), 1e-5);
  EXPECT_LE(rel_err(vec_from(gv), vec_from(nv)), 1e-5);

  // Counts, by independent arithmetic over the rows (row i sees keys max(0, i − W + 1) … i, in the 64-key blocks
  // holding them); the counters hold flash + naive under op "attention".
  int64_t visible = 0, blocks = 0;
  for (int64_t i = 0; i < t; ++i) {
    const int64_t lo = p.window > 0 ? std::max<int64_t>(0, i - p.window + 1) : 0;
    visible += i + 1 - lo;
    blocks += i / 64 - lo / 64 + 1;
  }
  if (p.window == 0) {
    EXPECT_EQ(visible, t * (t + 1) / 2);
  }
  const int64_t capped = p.cap > 0 ? 1 : 0, alibi = p.alibi > 0 ? 1 : 0, shared = b * (h - kvh);
  const float factor = 1.0f / std::sqrt(static_cast<float>(dk)) / (capped ? p.cap : 1.0f);
  const int64_t scaled = factor == 1.0f ? 0 : 1;
  EXPECT_EQ(sh.visible(), visible);
  EXPECT_EQ(flash_key_blocks(t, p.window), blocks);
  const OpCount f = flash_attention_forward_count(sh), g = flash_attention_backward_count(sh);
  EXPECT_EQ(f.matmul_flops, b * h * 4 * dk * visible);
  EXPECT_EQ(f.other_flops,
            b * h * ((4 + 2 * capped + 2 * alibi) * visible + blocks * (dk + 4) + t * (dk + 3) + scaled * t * dk));
  EXPECT_EQ(f.bytes_read, 4 * (b * t * d + 2 * b * t * dkv));
  EXPECT_EQ(f.bytes_written, 4 * (b * t * d + b * h * t));
  EXPECT_EQ(g.matmul_flops, b * h * 10 * dk * visible);
  EXPECT_EQ(g.other_flops,
            b * h * ((4 + 5 * capped + 2 * alibi) * visible + 2 * t * dk + scaled * 2 * t * dk) + shared * 2 * t * dk);
  EXPECT_EQ(g.bytes_written, 4 * (b * t * d + 2 * b * t * dkv));
  const OpCount naive_f = attention_forward_count(sh), naive_b = attention_backward_count(sh);
  // Both kernels' declared counts are what ran (naive's skip the scale at d_k = 1, as its kernel does).
  EXPECT_EQ(counters().get("attention", Phase::forward).flops(), f.flops() + naive_f.flops());
  EXPECT_EQ(counters().get("attention", Phase::backward).flops(), g.flops() + naive_b.flops());
  EXPECT_EQ(counters().get("attention", Phase::forward).bytes_read, f.bytes_read + naive_f.bytes_read);
  EXPECT_EQ(counters().get("attention", Phase::backward).bytes_read, g.bytes_read + naive_b.bytes_read);
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashSweep,
                         ::testing::Values(Shape4{1, 1, 4, 1}, Shape4{2, 5, 6, 3}, Shape4{1, 17, 12, 2},
                                           Shape4{1, 64, 8, 2}, Shape4{1, 65, 10, 2}, Shape4{1, 150, 6, 1},
                                           Shape4{2, 9, 5, 5}, Shape4{1, 129, 8, 2}, Shape4{2, 5, 6, 3, 1},
                                           Shape4{1, 70, 16, 4, 2}, Shape4{2, 17, 12, 6, 2}, Shape4{1, 129, 8, 4, 1},
                                           Shape4{1, 9, 5, 5, 1},
                                           // sliding windows: inside one key block, crossing blocks, a window of
                                           // one key, exactly a block, with groups; soft-capping alone and with both
                                           Shape4{1, 17, 12, 2, 0, 5}, Shape4{1, 150, 6, 1, 0, 70},
                                           Shape4{2, 65, 8, 2, 1, 1}, Shape4{1, 129, 8, 4, 2, 64},
                                           Shape4{1, 140, 16, 2, 0, 67}, Shape4{2, 9, 6, 3, 0, 9},
                                           Shape4{2, 17, 12, 2, 0, 0, 0.5f}, Shape4{1, 70, 16, 4, 2, 0, 0.7f},
                                           Shape4{1, 9, 5, 5, 0, 0, 1.0f}, Shape4{1, 133, 8, 2, 1, 66, 0.6f},
                                           // ALiBi: across key blocks, 3 heads (interleaved slopes), with groups
                                           // and with a window crossing a block
                                           Shape4{1, 150, 8, 2, 0, 0, 0, 8}, Shape4{2, 17, 12, 3, 0, 0, 0, 8},
                                           Shape4{1, 70, 16, 4, 2, 0, 0, 8}, Shape4{1, 133, 8, 2, 1, 66, 0, 16}));

// The register kernels: d_k = 64 (64 columns in four registers), d_k = 32 and 48 (16-lane chunks), full key
// blocks with rank-4 dK/dV updates (T ≥ 68) and partial ones: forward against float64, gradients against the
// naive attention (itself checked against finite differences above; differences here would cost minutes).
TEST(Flash, RegisterKernelsAtLargeHeadDims) {
  set_num_threads(2);
  const ScopedKernelIsa reference(KernelIsa::reference);
  // With windows crossing the full-block path (W = 100: rows whose window covers whole blocks, rows cut inside one)
  // and soft-capping.
  for (const Shape4 c :
       {Shape4{1, 130, 128, 2}, Shape4{2, 70, 32, 1}, Shape4{1, 100, 96, 2}, Shape4{1, 260, 128, 2, 0, 100},
        Shape4{1, 140, 64, 1, 0, 0, 0.8f}, Shape4{1, 200, 64, 1, 0, 129, 0.9f}, Shape4{1, 260, 128, 2, 0, 0, 0, 8}}) {
    const auto [b, t, d, h, kv, window, cap, alibi] = c;
    const AttentionScores rule{window, cap, alibi};
    SCOPED_TRACE(testing::PrintToString(c));
    const Vec q = random_vec(b * t * d, 1), k = random_vec(b * t * d, 2), v = random_vec(b * t * d, 3);
    const Tensor qt = tensor_from(q, {b, t, d}, Category::activation, "q");
    const Tensor kt = tensor_from(k, {b, t, d}, Category::activation, "k");
    const Tensor vt = tensor_from(v, {b, t, d}, Category::activation, "v");
    const Tensor gout = tensor_from(random_vec(b * t * d, 4), {b, t, d}, Category::temporary, "gctx");
    FlashAttentionSaved flash;
    const Tensor out = flash_attention_forward(flash, qt, kt, vt, h, h, "f", rule);
    EXPECT_LE(rel_err(vec_from(out), attention_ref(q, k, v, b, t, d, h, h, window, cap, alibi)), 2e-6);
    AttentionSaved naive;
    const Tensor out_naive = attention_forward(naive, qt, kt, vt, h, h, "n", rule);
    EXPECT_LE(rel_err(vec_from(out), vec_from(out_naive)), 2e-6);
    std::vector<Tensor> g, n;
    for (const char* name : {"gq", "gk", "gv", "nq", "nk", "nv"}) {
      (name[0] == 'g' ? g : n).push_back(Tensor::empty({b, t, d}, Category::temporary, name));
    }
    flash_attention_backward(g[0], g[1], g[2], gout, flash);
    attention_backward(n[0], n[1], n[2], gout, naive);
    for (int i = 0; i < 3; ++i) EXPECT_LE(rel_err(vec_from(g[i]), vec_from(n[i])), 1e-5) << "gradient " << i;
  }
}

// bf16 storage: q, k, v, out and the gradients bf16, arithmetic float32: the output is rounded once (u = 2⁻⁸
// per element, normwise 2u with the inputs' own rounding shared by the reference); gradients within 4u of the
// finite differences of the float64 reference on the same bf16 values.
TEST(Flash, Bf16StorageWithinItsRounding) {
  if (!bf16_matmul_unavailable_reason().empty()) GTEST_SKIP() << bf16_matmul_unavailable_reason();
  set_num_threads(2);
  const int64_t b = 1, t = 70, d = 12, h = 2;
  auto bf16_of = [](const Vec& x, const char* name) {
    Tensor out = Tensor::empty({1, 70, 12}, Category::activation, name, DType::bf16);
    for (size_t i = 0; i < x.size(); ++i) out.data_bf16()[i] = to_bf16(static_cast<float>(x[i]));
    return out;
  };
  auto values = [](const Tensor& x) {
    Vec out(static_cast<size_t>(x.numel()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = to_float(x.data_bf16()[i]);
    return out;
  };
  const Tensor qt = bf16_of(random_vec(b * t * d, 1), "q"), kt = bf16_of(random_vec(b * t * d, 2), "k");
  const Tensor vt = bf16_of(random_vec(b * t * d, 3), "v"), rt = bf16_of(random_vec(b * t * d, 4), "r");
  const Vec q = values(qt), k = values(kt), v = values(vt), r = values(rt);
  FlashAttentionSaved saved;
  const Tensor out = flash_attention_forward(saved, qt, kt, vt, h, h, "fb.attn");
  ASSERT_EQ(out.dtype(), DType::bf16);
  const double u = 1.0 / 256;
  EXPECT_LE(rel_err(values(out), attention_ref(q, k, v, b, t, d, h)), 2 * u);
  Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq", DType::bf16);
  Tensor gk = Tensor::empty({b, t, d}, Category::temporary, "gk", DType::bf16);
  Tensor gv = Tensor::empty({b, t, d}, Category::temporary, "gv", DType::bf16);
  flash_attention_backward(gq, gk, gv, rt, saved);
  auto loss = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    return dot(attention_ref(qq, kk, vv, b, t, d, h), r);
  };
  EXPECT_LE(rel_err(values(gq), fd_grad([&](const Vec& x) { return loss(x, k, v); }, q)), 4 * u);
  EXPECT_LE(rel_err(values(gk), fd_grad([&](const Vec& x) { return loss(q, x, v); }, k)), 4 * u);
  EXPECT_LE(rel_err(values(gv), fd_grad([&](const Vec& x) { return loss(q, k, x); }, v)), 4 * u);
  EXPECT_EQ(flash_attention_forward_count({b, t, h, h, d / h}, DType::bf16).bytes_read, 2 * 3 * b * t * d);
}

// The tiled kernels (runtime/kernel_isa.h: float32 tiles on AVX-512F; for bf16 storage VDPBF16PS, and AMX for d_k
// a multiple of 32) against the reference kernels on the same inputs, each level this CPU has. float32 storage:
// the output within 2e-6 of the float64 reference, gradients within 1e-5 of the reference kernels' (themselves
// within 1e-4 of finite differences above). bf16 storage: the output within 2u of the float64 reference and of
// the reference kernels (the products' operands P and the scaled rows are rounded once more), gradients within 4u
// of the reference kernels' (within 4u of finite differences above). T across the 64-key tiles (1, a partial
// tile, exactly one, one + 1, several + a remainder), d_k 16 … 128, shared K/V heads, windows, soft-capping and
// ALiBi. Counts and allocations do not depend on the level.
struct PathResult {
  std::vector<Vec> values;  // out, dQ, dK, dV, the float64 reference output
  OpCount forward, backward;
  int64_t peak = 0;
};
PathResult run_path(KernelIsa isa, const Shape4& c, DType dtype) {
  const auto [b, t, d, h, kv0, window, cap, alibi] = c;
  const int64_t kvh = kv0 > 0 ? kv0 : h, dkv = kvh * (d / h);
  auto make = [dtype](const Vec& x, Shape shape, const char* name) {
    Tensor out = Tensor::empty(shape, Category::activation, name, dtype);
    for (size_t i = 0; i < x.size(); ++i) {
      if (dtype == DType::bf16)
        out.data_bf16()[i] = to_bf16(static_cast<float>(x[i]));
      else
        out.data()[i] = static_cast<float>(x[i]);
    }
    return out;
  };
  auto values = [dtype](const Tensor& x) {
    Vec out(static_cast<size_t>(x.numel()));
    for (size_t i = 0; i < out.size(); ++i) out[i] = dtype == DType::bf16 ? to_float(x.data_bf16()[i]) : x.data()[i];
    return out;
  };
  const Tensor qt = make(random_vec(b * t * d, 1), {b, t, d}, "q");
  const Tensor kt = make(random_vec(b * t * dkv, 2), {b, t, dkv}, "k");
  const Tensor vt = make(random_vec(b * t * dkv, 3), {b, t, dkv}, "v");
  const Tensor gout = make(random_vec(b * t * d, 4), {b, t, d}, "gctx");
  const ScopedKernelIsa scope(isa);
  counters().reset();
  counters().set_phase(Phase::forward);
  tracker().reset_peak_stats();
  const int64_t before = tracker().stats().total.allocated_bytes.current;
  FlashAttentionSaved saved;
  const Tensor out = flash_attention_forward(saved, qt, kt, vt, h, kvh, "f", {window, cap, alibi});
  Tensor gq = Tensor::empty({b, t, d}, Category::temporary, "gq", dtype);
  Tensor gk = Tensor::empty({b, t, dkv}, Category::temporary, "gk", dtype);
  Tensor gv = Tensor::empty({b, t, dkv}, Category::temporary, "gv", dtype);
  counters().set_phase(Phase::backward);
  flash_attention_backward(gq, gk, gv, gout, saved);
  PathResult r;
  r.peak = tracker().stats().total.allocated_bytes.peak - before;
  r.values = {values(out), values(gq), values(gk), values(gv),
              attention_ref(values(qt), values(kt), values(vt), b, t, d, h, kvh, window, cap, alibi)};
  r.forward = counters().get("attention", Phase::forward);
  r.backward = counters().get("attention", Phase::backward);
  return r;
}

TEST(Flash, TiledKernelsMatchTheReference) {
  if (kernel_isa_best() == KernelIsa::reference) GTEST_SKIP() << "this CPU has no AVX-512";
  set_num_threads(2);
  const double u = 1.0 / 256;
  for (const DType dtype : {DType::f32, DType::bf16}) {
    const double out_tol = dtype == DType::bf16 ? 2 * u : 2e-6, grad_tol = dtype == DType::bf16 ? 4 * u : 1e-5;
    for (const Shape4 c : {Shape4{1, 1, 32, 2}, Shape4{2, 17, 64, 2}, Shape4{1, 64, 64, 1}, Shape4{1, 65, 128, 2, 1},
                           Shape4{1, 200, 256, 4, 2}, Shape4{2, 130, 64, 4, 1}, Shape4{1, 150, 128, 1, 0, 70},
                           Shape4{1, 140, 64, 2, 0, 0, 0.8f}, Shape4{1, 133, 96, 2, 1, 66, 0.6f},
                           Shape4{1, 150, 64, 2, 0, 0, 0, 8}, Shape4{1, 300, 128, 1, 0, 129}, Shape4{1, 100, 96, 2}}) {
      SCOPED_TRACE(testing::PrintToString(c) + " " + dtype_name(dtype));
      const PathResult ref = run_path(KernelIsa::reference, c, dtype);
      EXPECT_LE(rel_err(ref.values[0], ref.values[4]), out_tol);
      for (KernelIsa isa : {KernelIsa::avx512, KernelIsa::avx512_bf16, KernelIsa::amx}) {
        if (static_cast<int>(isa) > static_cast<int>(kernel_isa_best())) continue;
        SCOPED_TRACE(kernel_isa_name(isa));
        const PathResult r = run_path(isa, c, dtype);
        EXPECT_LE(rel_err(r.values[0], r.values[4]), out_tol);
        EXPECT_LE(rel_err(r.values[0], ref.values[0]), out_tol);
        for (int i = 1; i < 4; ++i) EXPECT_LE(rel_err(r.values[i], ref.values[i]), grad_tol) << "gradient " << i;
        EXPECT_EQ(r.peak, ref.peak);
        EXPECT_EQ(r.forward.matmul_flops, ref.forward.matmul_flops);
        EXPECT_EQ(r.forward.other_flops, ref.forward.other_flops);
        EXPECT_EQ(r.backward.matmul_flops, ref.backward.matmul_flops);
        EXPECT_EQ(r.backward.other_flops, ref.backward.other_flops);
      }
    }
  }
  EXPECT_THROW(ScopedKernelIsa(static_cast<KernelIsa>(static_cast<int>(kernel_isa_best()) + 1)), std::invalid_argument);
}

TEST(Flash, RejectsBadShapesAndBackwardTwice) {
  const Tensor q = Tensor::zeros({1, 4, 6}, Category::activation, "q");
  FlashAttentionSaved saved;
  expect_invalid([&] { flash_attention_forward(saved, q, q, q, 4, 4, "x"); },
                 {"q's width 6 is not divisible by num_heads 4"});
  const Tensor k = Tensor::zeros({1, 4, 6}, Category::activation, "k", DType::bf16);
  expect_invalid([&] { flash_attention_forward(saved, q, k, q, 2, 2, "x"); }, {"of one dtype"});
  expect_invalid([&] { flash_attention_forward(saved, q, q, q, 3, 2, "x"); }, {"num_kv_heads is 2", "divisor"});
  const Tensor k2 = Tensor::zeros({1, 4, 4}, Category::activation, "k");
  expect_invalid([&] { flash_attention_forward(saved, q, k2, k2, 3, 1, "x"); }, {"expected num_kv_heads × head_dim"});
  Tensor g = Tensor::zeros({1, 4, 6}, Category::temporary, "g");
  expect_invalid([&] { flash_attention_backward(g, g, g, g, saved); }, {"nothing saved"});
}

}  // namespace
}  // namespace reckon
